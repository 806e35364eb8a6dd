# Helpers shared by tests/dnf/run and tests/dnf/real-dnf5 (sourced, not run). The caller sets
# work (a scratch directory), top (the tree), here (tests/dnf), mode (real | standin), PY, the
# array pids (processes to end on exit) and a fail function.
# shellcheck shell=bash disable=SC2154 # work, top, here, mode: the caller's
# ---------------------------------------------------------------- rpms and the repository
build_rpm() { # NAME VERSION [FAIL: 1 = a %pre scriptlet (lua: the root has no /bin/sh) fails] [OBSOLETES]
    mkdir -p "$work/rpmbuild/SPECS"
    cat >"$work/rpmbuild/SPECS/test.spec" <<'EOF'
Name: %{pkgname}
Version: %{pkgver}
Release: 1
Summary: snapback dnf plugin test package
License: GPL-2.0-or-later
BuildArch: noarch
%{?obsoletes:Obsoletes: %{obsoletes}}
%description
A package the snapback dnf plugin test installs, upgrades and removes.
%install
mkdir -p %{buildroot}/usr/share/snapback-test
echo "%{pkgname} %{pkgver}" >%{buildroot}/usr/share/snapback-test/%{pkgname}
%if %{preexit}
%pre -p <lua>
error("snapback test: this package refuses to install")
%endif
%files
/usr/share/snapback-test/%{pkgname}
EOF
    rpmbuild -bb --quiet --define "_topdir $work/rpmbuild" --define "pkgname $1" \
        --define "pkgver $2" --define "preexit ${3:-0}" ${4:+--define "obsoletes $4"} \
        "$work/rpmbuild/SPECS/test.spec" >/dev/null
    mkdir -p "$work/repo"
    cp "$work/rpmbuild/RPMS/noarch/$1-$2-1.noarch.rpm" "$work/repo/"
    createrepo_c --quiet --update "$work/repo" >/dev/null
}

# ---------------------------------------------------------------- the private system bus
bus_sock="$work/bus.sock"
start_bus() {
    local policy="$top/systemd/snapback-dbus.conf"
    if [ ! -f "$policy" ]; then
        [ "$mode" = standin ] || fail "the project's bus policy $policy is missing"
        policy="$here/standin-policy.conf"
    fi
    # The system bus's default policy (as Debian's system.conf), then the project's policy.
    cat >"$work/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$bus_sock</listen>
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
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <include>$policy</include>
</busconfig>
EOF
    dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile &
    pids+=($!)
    # Up to 30 s: a liveness bound on a loaded machine, not a startup-time check.
    for _ in $(seq 600); do [ -S "$bus_sock" ] && break; sleep 0.05; done
    [ -S "$bus_sock" ] || fail "dbus-daemon did not start"
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$bus_sock"
}

wait_for_name() { # up to 60 s (init, FUSE and loop devices on a loaded machine)
    for _ in $(seq 1200); do
        if busctl --system status org.snapback.Snapback1 >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    fail "org.snapback.Snapback1 did not appear on the bus"
}

service_pid=
start_service() { # [--refuse] (stand-in only)
    if [ "$mode" = standin ]; then
        "$PY" "$here/standin.py" "$@" >"$work/service.log" 2>&1 &
    else
        start_snapbackd
    fi
    service_pid=$!
    pids+=("$service_pid")
    wait_for_name
}

stop_service() {
    [ -n "$service_pid" ] || return 0
    kill "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
    service_pid=
}

# The real daemon: userspace backend over files (volumes served through FUSE + loop), with
# authorization on as installed (no --no-polkit) and no polkitd on the bus: dnf runs as root,
# and root is allowed by its uid, so the plugin takes its snapshots where polkitd is missing.
start_snapbackd() {
    local bin="$top/target/debug/snapbackd"
    [ -x "$bin" ] || fail "$bin is missing: run cargo build -p snapbackd -p snapbackctl first"
    mkdir -p "$work/daemon/fuse"
    truncate -s 64M "$work/daemon/root.img"
    truncate -s 256M "$work/daemon/pool.img"
    cat >"$work/daemon/snapback.toml" <<EOF
[pool]
path = "$work/daemon/pool.img"

[[volume]]
name = "root"
device = "$work/daemon/root.img"
auto = true
EOF
    "$bin" init --config "$work/daemon/snapback.toml" >"$work/daemon/init.log" 2>&1 ||
        { cat "$work/daemon/init.log"; fail "snapbackd init failed"; }
    # snapbackd=debug: the log then shows each call authorized without polkit.
    SNAPBACK_LOG_STDERR=1 SNAPBACK_FUSE_DIR="$work/daemon/fuse" RUST_LOG=info,snapbackd=debug \
        "$bin" --config "$work/daemon/snapback.toml" --backend userspace \
        >>"$work/service.log" 2>&1 &
}

expect() { "$PY" "$here/expect.py" "$@" || fail "snapshot sets not as expected (above)"; }
