# Helpers for the snapbackd-kernel boots: the product as an administrator runs it, on the
# real kernel's device-mapper — snapbackd activate, snapbackd on a bus, busctl as the client.

export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
BUS=org.snapback.Snapback1
MGR=/org/snapback/Snapback1
SNAP=/org/snapback/Snapback1/snapshot

# write_config [POOL-DEVICE] : the administrator's /etc/snapback/snapback.toml
write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "${1:-/dev/disk/pool}"

[[volume]]
name = "root"
device = "/dev/disk/root"
auto = true
cow_size = "48M"

[[volume]]
name = "var"
device = "/dev/disk/var"
auto = true
cow_size = "16M"
EOC
}

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

# manifest DIR : every entry with type, size, mode, owner and content hash / link target
manifest() {
  (cd "$1" && find . ! -name lost+found ! -path './lost+found/*' | sort | while read -r p; do
    if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
    elif [ -f "$p" ]; then echo "F $p $(stat -c '%s %a %u:%g' "$p") $(sha256sum < "$p" | cut -c1-64)"
    elif [ -d "$p" ]; then echo "D $p $(stat -c '%a %u:%g' "$p")"
    else echo "? $p"; fi
  done)
}

keep_save() { (cd /tmp/keep && tar -cf /dev/disk/keep .); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }

# tree DIR SEED : the pre-upgrade system: many files, a large file, symlinks, modes, owners
tree() {
  mkdir -p "$1/etc/conf.d" "$1/usr/lib/app" "$1/usr/bin" "$1/var/cache"
  i=0
  while [ $i -lt 200 ]; do
    echo "config $i of $2" > "$1/etc/conf.d/file$i.conf"; i=$((i + 1))
  done
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count=12 2>/dev/null
  head -c 70000 /dev/urandom > "$1/usr/bin/tool"
  chmod 4755 "$1/usr/bin/tool"; chmod 0600 "$1/etc/conf.d/file7.conf"
  chown 1000:1000 "$1/var/cache"
  ln -s ../lib/app/libbig.so "$1/usr/bin/libbig-link"
  ln -s /nonexistent/target "$1/etc/dangling"
}

# upgrade DIR MIB : what a package upgrade does: modify, add (MIB of new library), delete,
# chmod, relink
upgrade() {
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count=3 seek=4 conv=notrunc 2>/dev/null
  echo "new setting" >> "$1/etc/conf.d/file3.conf"
  rm -f "$1/etc/conf.d/file10.conf" "$1/usr/bin/tool"
  dd if=/dev/urandom of="$1/usr/lib/app/libnew.so" bs=1M count="$2" 2>/dev/null
  mkdir -p "$1/usr/share/new"; echo hi > "$1/usr/share/new/readme"
  chmod 0644 "$1/etc/conf.d/file7.conf"
  rm "$1/usr/bin/libbig-link"; ln -s ../lib/app/libnew.so "$1/usr/bin/libbig-link"
  sync
}

# no_device REGEX / has_device REGEX : over `dmsetup ls`, failing if dmsetup itself fails
no_device() { _ls="$(dm ls)" || return 1; ! echo "$_ls" | grep -Eq "$1"; }
has_device() { _ls="$(dm ls)" || return 1; echo "$_ls" | grep -Eq "$1"; }
# not_suspended NAME : the device is live (a failed transition must never leave it suspended)
not_suspended() { dm info "$1" | grep -Eq 'State: +ACTIVE'; }
no_object() { ! busctl get-property $BUS "$1" $BUS.Snapshot State >/dev/null 2>&1; }

mount_vol() { mkdir -p "/mnt/$1"; mount -t ext4 "/dev/mapper/snapback-$1" "/mnt/$1"; }
target_of() { dm table "snapback-$1" | awk '{print $3}'; }
