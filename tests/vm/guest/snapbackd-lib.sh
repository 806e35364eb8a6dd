# Helpers for scenarios that run the product itself in the VM: a system bus, snapbackd on the
# kernel backend with busctl as the client, and a manifest of a directory tree to compare
# trees byte for byte across boots. Source it with `. /snapback/snapbackd-lib.sh`.

export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
BUS=org.snapback.Snapback1
MGR=/org/snapback/Snapback1
SNAP=/org/snapback/Snapback1/snapshot

start_bus() {
  mkdir -p /run/dbus
  dbus-daemon --config-file=/etc/dbus-system.conf --nofork --nopidfile >/tmp/dbus.log 2>&1 &
  n=0; while [ ! -S /run/dbus/system_bus_socket ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
}

# start_daemon : snapbackd on the kernel backend, in this shell (not under `check`, whose
# command substitution is a subshell that would lose DAEMON_PID); then `check NAME owns_name`.
start_daemon() {
  SNAPBACK_TESTING=1 snapbackd --config /etc/snapback/snapback.toml --backend kernel --no-polkit \
    >>/tmp/snapbackd.log 2>&1 &
  DAEMON_PID=$!
}

# owns_name : waits until the daemon started last owns org.snapback.Snapback1 (it checks the
# name is free before touching any volume, so a second instance exits instead)
owns_name() {
  n=0
  while ! busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
      GetConnectionUnixProcessID s $BUS 2>/dev/null | grep -qx "u $DAEMON_PID"; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "snapbackd exited"; tail -n 20 /tmp/snapbackd.log; return 1; }
    sleep 0.2; n=$((n + 1))
    [ $n -lt 300 ] || { echo "snapbackd did not take its name"; tail -n 20 /tmp/snapbackd.log; return 1; }
  done
}

stop_daemon() {
  kill -TERM "$DAEMON_PID"
  wait "$DAEMON_PID" || true
  mkdir -p /out; cp /tmp/snapbackd.log "/out/snapbackd-$(date +%s).log" 2>/dev/null || true
}

# state ID : the State property of snapshot set ID
state() { busctl get-property $BUS $SNAP/$1 $BUS.Snapshot State 2>&1 | sed 's/^s "\(.*\)"$/\1/'; }

# wait_gone ID SECONDS : until the set's object disappears (merge finished, set removed)
wait_gone() {
  n=0
  while busctl get-property $BUS $SNAP/$1 $BUS.Snapshot State >/dev/null 2>&1; do
    sleep 0.5; n=$((n + 1))
    [ $n -lt $(($2 * 2)) ] || { echo "set $1 still there: $(state "$1")"; return 1; }
  done
}

# dbus_error METHOD ARGS... : the D-Bus error name of a Manager call, or "no error" (busctl
# prints only the message; needs the scenario to stage dbus-send as /in/dbus-send)
dbus_error() {
  _m="$1"; shift
  if _out="$(/in/dbus-send --system --print-reply --dest=$BUS $MGR "$BUS.Manager.$_m" "$@" 2>&1)"; then
    echo "no error"
  else
    echo "$_out" | sed -n 's/^Error \([^:]*\):.*/\1/p'
  fi
}

# wait_state ID STATE SECONDS : until the set's State is STATE
wait_state() {
  _n=0
  while [ "$(state "$1")" != "$2" ]; do
    sleep 0.5; _n=$((_n + 1))
    [ $_n -lt $(($3 * 2)) ] || { echo "set $1 is $(state "$1"), not $2"; return 1; }
  done
}

# manifest DIR : every entry with type, size, mode, owner and content hash / link target
manifest() {
  (cd "$1" && find . ! -name lost+found ! -path './lost+found/*' | sort | while read -r p; do
    if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
    elif [ -f "$p" ]; then echo "F $p $(stat -c '%s %a %u:%g' "$p") $(sha256sum < "$p" | cut -c1-64)"
    elif [ -d "$p" ]; then echo "D $p $(stat -c '%a %u:%g' "$p")"
    else echo "? $p"; fi
  done)
}

