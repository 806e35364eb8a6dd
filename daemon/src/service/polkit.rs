//! Authorization of mutating calls against the *caller* of the message: root by its uid, every
//! other caller by polkit.
//!
//! A caller whose uid is 0 is allowed without asking polkit, as systemd does: root can do all
//! of this anyway, and root's tools (the dnf plugin, snapbackctl) must keep working where
//! polkitd is missing, hung, or broken by the very upgrade that is to be rolled back. The uid
//! comes from the bus daemon (GetConnectionUnixUser on the sender's unique name: the peer
//! credentials the bus took from the socket when the caller connected), never from anything
//! the caller says, and the bus daemon answers whether or not polkitd runs. polkitd trusts
//! the same source when it resolves a bus name to a user.
//!
//! Everyone else is asked about through polkit, with the caller's unique bus name as the
//! subject. When the caller set ALLOW_INTERACTIVE_AUTH on its message, polkit may ask the user
//! to authenticate through their agent. Any failure to get a "yes" — a "no", a needed but
//! impossible authentication, polkit missing or not answering in time — refuses the call
//! (fail closed). A caller whose uid the bus does not tell is asked about through polkit too.

use std::collections::HashMap;
use std::time::Duration;

use snapback_dbus::Error;
use zbus::fdo::DBusProxy;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

/// How long a non-interactive check may take. polkitd answers one in milliseconds; its rules
/// may run helpers through `polkit.spawn`, which polkit itself stops after 10 s. Shorter than
/// the 25 s most clients (libdbus, sd-bus) wait for a reply, so that a caller of a hung polkitd
/// gets NotAuthorized with the reason instead of its own timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long an interactive check may take: a person answers the agent's password prompt.
pub const INTERACTIVE_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the bus daemon may take to tell a caller's uid (it answers from its own table).
const UID_TIMEOUT: Duration = Duration::from_secs(5);

/// Who decides whether a caller may mutate.
#[derive(Debug, Clone)]
pub enum Authorizer {
    /// Root by its uid from the bus daemon, everyone else by polkitd
    /// (org.freedesktop.PolicyKit1 on the system bus).
    Polkit { authority: AuthorityProxy<'static>, bus: DBusProxy<'static> },
    /// Every caller may mutate. Only reachable with `--no-polkit` and `SNAPBACK_TESTING=1`.
    AllowAllForTesting,
}

/// Why the caller's uid is not known.
#[derive(Debug, thiserror::Error)]
enum UidError {
    #[error("the message has no sender")]
    NoSender,
    #[error("the bus daemon did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the bus daemon refused: {0}")]
    Bus(#[source] zbus::fdo::Error),
}

/// Why polkit's answer is missing.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Bus(zbus::Error),
}

impl Authorizer {
    /// An authorizer that asks the bus daemon and polkitd on `connection`'s bus.
    pub async fn polkit(connection: &Connection) -> zbus::Result<Self> {
        let authority = AuthorityProxy::builder(connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let bus =
            DBusProxy::builder(connection).cache_properties(CacheProperties::No).build().await?;
        Ok(Authorizer::Polkit { authority, bus })
    }

    /// Ok when the sender of the message with `header` may perform `action`. Every mutating
    /// call of the API goes through here.
    pub async fn check(&self, header: &Header<'_>, action: &str) -> Result<(), Error> {
        let (authority, bus) = match self {
            Authorizer::AllowAllForTesting => return Ok(()),
            Authorizer::Polkit { authority, bus } => (authority, bus),
        };
        let caller =
            header.sender().map(|s| s.to_string()).unwrap_or_else(|| "unknown caller".into());
        match caller_uid(bus, header).await {
            Ok(0) => {
                tracing::debug!(
                    action,
                    caller,
                    "authorized: the caller is root (uid 0), polkit not asked"
                );
                return Ok(());
            }
            Ok(_) => {}
            // polkit resolves the caller through the same bus daemon and will most likely
            // fail too; it has the last word either way, and refuses when it cannot tell.
            Err(e) => {
                tracing::warn!(action, caller, "cannot learn the caller's uid: {e}; asking polkit")
            }
        }
        let subject = Subject::new_for_message_header(header).map_err(|e| {
            Error::NotAuthorized(format!("not authorized: cannot identify the caller: {e}"))
        })?;
        let interactive = header.primary().flags().contains(Flags::ALLOW_INTERACTIVE_AUTH);
        let (flags, timeout) = if interactive {
            (CheckAuthorizationFlags::ALLOW_USER_INTERACTION, INTERACTIVE_CHECK_TIMEOUT)
        } else {
            (CheckAuthorizationFlags::empty(), CHECK_TIMEOUT)
        };
        let details: HashMap<&str, &str> = HashMap::new();
        let answer = tokio::time::timeout(
            timeout,
            authority.check_authorization(&subject, action, &details, flags, ""),
        )
        .await
        .map_err(|_| AskError::Timeout(timeout))
        .and_then(|answer| answer.map_err(AskError::Bus));
        match answer {
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

/// The uid of the sender of the message with `header`, as the bus daemon knows it.
async fn caller_uid(bus: &DBusProxy<'_>, header: &Header<'_>) -> Result<u32, UidError> {
    let sender = header.sender().ok_or(UidError::NoSender)?;
    tokio::time::timeout(UID_TIMEOUT, bus.get_connection_unix_user(BusName::Unique(sender.clone())))
        .await
        .map_err(|_| UidError::Timeout(UID_TIMEOUT))?
        .map_err(UidError::Bus)
}
