//! The configuration of the private system buses the host tests run: Debian's system-bus
//! default policy (everything denied unless a service's policy file opens it) plus the given
//! policy files, so the project's own `systemd/snapback-dbus.conf` is enforced as a real
//! system bus would.

use std::path::PathBuf;

/// A system-bus configuration listening on `listen` (a D-Bus address) that includes every
/// file of `policies`.
pub fn system_bus_config(listen: &str, policies: &[PathBuf]) -> String {
    let includes: String = policies
        .iter()
        .map(|policy| format!("  <include>{}</include>\n", policy.display()))
        .collect();
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{listen}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
{includes}</busconfig>
"#
    )
}
