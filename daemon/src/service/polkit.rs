//! Authorization of mutating calls with polkit, against the *caller* of the message.
//!
//! The subject is the caller's unique bus name (polkit resolves it to a process and user
//! through the bus). When the caller set ALLOW_INTERACTIVE_AUTH on its message, polkit may ask
//! the user to authenticate through their agent. Any failure to get a "yes" — a "no", a needed
//! but impossible authentication, or polkit not answering — refuses the call (fail closed).

use std::collections::HashMap;

use snapback_dbus::Error;
use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

/// Who decides whether a caller may mutate.
#[derive(Debug, Clone)]
pub enum Authorizer {
    /// Ask polkitd (org.freedesktop.PolicyKit1 on the system bus).
    Polkit(AuthorityProxy<'static>),
    /// Every caller may mutate. Only reachable with `--no-polkit` and `SNAPBACK_TESTING=1`.
    AllowAllForTesting,
}

impl Authorizer {
    /// An authorizer that asks polkitd on `connection`'s bus.
    pub async fn polkit(connection: &Connection) -> zbus::Result<Self> {
        let proxy = AuthorityProxy::builder(connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(Authorizer::Polkit(proxy))
    }

    /// Ok when the sender of the message with `header` may perform `action`.
    pub async fn check(&self, header: &Header<'_>, action: &str) -> Result<(), Error> {
        let proxy = match self {
            Authorizer::AllowAllForTesting => return Ok(()),
            Authorizer::Polkit(proxy) => proxy,
        };
        let subject = Subject::new_for_message_header(header).map_err(|e| {
            Error::NotAuthorized(format!("not authorized: cannot identify the caller: {e}"))
        })?;
        let interactive = header.primary().flags().contains(Flags::ALLOW_INTERACTIVE_AUTH);
        let flags = if interactive {
            CheckAuthorizationFlags::ALLOW_USER_INTERACTION
        } else {
            CheckAuthorizationFlags::empty()
        };
        let caller = header
            .sender()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown caller".into());
        let details: HashMap<&str, &str> = HashMap::new();
        match proxy
            .check_authorization(&subject, action, &details, flags, "")
            .await
        {
            Ok(result) if result.is_authorized => {
                tracing::debug!(action, caller, "polkit: authorized");
                Ok(())
            }
            Ok(result) if result.is_challenge => {
                tracing::info!(action, caller, "polkit: refused, authentication required");
                Err(Error::NotAuthorized(format!(
                    "not authorized: {action} requires authentication; call with interactive \
                     authorization from a session with a polkit agent (e.g. snapbackctl in a \
                     terminal), or as root"
                )))
            }
            Ok(result) => {
                // After an agent was asked, polkit says only "no" (and "dismissed" when the
                // dialog was closed): a wrong password and a policy that never allows look
                // the same, so the message names both rather than blame the policy.
                let why = if result.details.contains_key("polkit.dismissed") {
                    "the authentication dialog was dismissed"
                } else if interactive {
                    "authentication failed, or polkit policy does not allow it for this caller"
                } else {
                    "polkit policy does not allow it for this caller"
                };
                tracing::info!(action, caller, why, "polkit: refused");
                Err(Error::NotAuthorized(format!("not authorized: {action} refused: {why}")))
            }
            Err(e) => {
                tracing::warn!(action, caller, "polkit could not be asked: {e}");
                Err(Error::NotAuthorized(format!(
                    "not authorized: polkit could not be asked about {action} ({e}); is polkitd \
                     running?"
                )))
            }
        }
    }
}
