# Shared by this scenario's boots: a system bus and snapbackd on the kernel backend.
need_bin snapbackd
need_bin snapbackctl
cat > /etc/snapback.toml <<TOML
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "data"
device = "/dev/disk/vol"
auto = true

[[volume]]
name = "logs"
device = "/dev/disk/vol2"
auto = false
TOML

start_bus() {
  mkdir -p /run/dbus
  dbus-daemon --config-file=/etc/dbus-system.conf --nofork --nopidfile &
  n=0; while [ ! -S /run/dbus/system_bus_socket ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
}

start_daemon() {
  SNAPBACK_TESTING=1 SNAPBACK_LOG_STDERR=1 snapbackd --config /etc/snapback.toml --backend kernel \
    --no-polkit 2>>/tmp/snapbackd.log &
  DAEMON_PID=$!
  n=0
  until snapbackctl status >/dev/null 2>&1; do
    kill -0 $DAEMON_PID 2>/dev/null || { echo "CHECK FAIL daemon-starts: $(tail -n 5 /tmp/snapbackd.log | tr '\n' ' ')"; exit 1; }
    n=$((n + 1)); [ $n -lt 300 ] || { echo "CHECK FAIL daemon-starts: no answer"; exit 1; }
    sleep 0.2
  done
}

stop_daemon() { kill -TERM $DAEMON_PID; wait $DAEMON_PID || true; }

# the block device a volume is served at (the kernel backend's naming: snapback-<volume>)
volume_device() { echo "/dev/mapper/snapback-$1"; }

# the set id in `snapbackctl snapshot --json` output
set_id() { tr ',' '\n' < "$1" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n1; }

# the daemon's measured suspend time of the last snapshot set, in microseconds
last_suspended_us() { sed -n 's/.*suspended_us=\([0-9]*\).*/\1/p' /tmp/snapbackd.log | tail -n1; }

tree_sums() { (cd /mnt && find . -path ./lost+found -prune -o -type f -print | sort | xargs sha256sum); }
