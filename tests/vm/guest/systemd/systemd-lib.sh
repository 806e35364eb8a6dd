# Helpers for boot scripts of systemd scenarios (`init` = systemd: systemd-units,
# systemd-userspace): the product as installed by tools/install, run by systemd as PID 1; the
# checks read systemd's view of the units and the journal. Source it with
# `. /snapback/systemd-lib.sh` (it sources snapbackd-lib.sh: BUS MGR SNAP, state, wait_gone,
# manifest).

. /snapback/snapbackd-lib.sh

# prop UNIT PROPERTY : one property as `systemctl show` reports it
prop() { systemctl show -P "$2" "$1"; }

# in_order UNIT-A UNIT-B : A became active strictly before B (monotonic timestamps, µs)
in_order() {
  _a="$(prop "$1" ActiveEnterTimestampMonotonic)"; _b="$(prop "$2" ActiveEnterTimestampMonotonic)"
  [ "${_a:-0}" -gt 0 ] && [ "${_b:-0}" -gt 0 ] && [ "$_a" -lt "$_b" ] ||
    { echo "$1 at ${_a:-?} us, $2 at ${_b:-?} us"; return 1; }
}

# journal_has FIELD=VALUE... : this boot's journal has an entry from snapbackd.service with
# every one of these fields (journald stores what it was sent asynchronously: up to 10 s)
journal_has() {
  _n=0
  until _hits="$(journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapbackd.service "$@")" &&
        [ -n "$_hits" ]; do
    _n=$((_n + 1)); [ $_n -lt 20 ] || { echo "no journal entry with $*"; return 1; }
    sleep 0.5
  done
  echo "$_hits"
}

# journal_line UNIT TEXT : the unit's journal this boot has a line containing TEXT (up to 10 s)
journal_line() {
  _n=0
  until journalctl -b -q --no-pager -u "$1" | grep -qF "$2"; do
    _n=$((_n + 1)); [ $_n -lt 20 ] || { echo "no '$2' in the journal of $1"; return 1; }
    sleep 0.5
  done
}

# no_hardening_errors UNIT : nothing in the unit's journal (its own lines and systemd's about
# it) that a confinement refusal produces: EPERM from the system call filter, a device the
# device policy denies, a read-only path
no_hardening_errors() {
  _bad="$(journalctl -b -q --no-pager -u "$1" | grep -Ei 'Permission denied|Operation not permitted|EPERM|EACCES|Read-only file system|access denied' || true)"
  [ -z "$_bad" ] || { echo "$_bad"; return 1; }
}

# main_pid : snapbackd.service's main process
main_pid() { prop snapbackd.service MainPID; }

# bus_pid NAME : the process owning a bus name (empty when nobody does)
bus_pid() {
  busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
    GetConnectionUnixProcessID s "$1" 2>/dev/null | sed -n 's/^u //p'
}
name_has_owner() {
  busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s "$1"
}

# tree DIR SEED : a small installed system: config files, a library, a setuid binary, symlinks
tree() {
  mkdir -p "$1/etc/conf.d" "$1/usr/lib/app" "$1/usr/bin"
  i=0
  while [ $i -lt 60 ]; do echo "config $i of $2" > "$1/etc/conf.d/file$i.conf"; i=$((i + 1)); done
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count="$3" 2>/dev/null
  head -c 70000 /dev/urandom > "$1/usr/bin/tool"
  chmod 4755 "$1/usr/bin/tool"; chmod 0600 "$1/etc/conf.d/file7.conf"
  ln -s ../lib/app/libbig.so "$1/usr/bin/libbig-link"
  sync
}

# upgrade DIR MIB [PATCHES] : what a package upgrade does: modify (PATCHES scattered 4 KiB
# writes into the library, 128 KiB apart: one COW chunk each, none adjacent), add MIB of new
# library, delete, relink
upgrade() {
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count=1 seek=1 conv=notrunc 2>/dev/null
  _i=0
  while [ $_i -lt "${3:-0}" ]; do
    dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=4k count=1 seek=$((_i * 32 + 5)) conv=notrunc 2>/dev/null
    _i=$((_i + 1))
  done
  echo "new setting" >> "$1/etc/conf.d/file3.conf"
  rm -f "$1/etc/conf.d/file10.conf" "$1/usr/bin/tool"
  dd if=/dev/urandom of="$1/usr/lib/app/libnew.so" bs=1M count="$2" 2>/dev/null
  rm "$1/usr/bin/libbig-link"; ln -s ../lib/app/libnew.so "$1/usr/bin/libbig-link"
  sync
}

# same_manifest WANT-FILE GOT-FILE : equal, else the first differing lines (- wanted, + got)
same_manifest() {
  cmp -s "$1" "$2" && return 0
  diff "$1" "$2" | grep '^[-+][^-+]' | head -n 3
  return 1
}
# same_tree WANT-FILE DIR : DIR's manifest now equals the recorded one
same_tree() { manifest "$2" > /tmp/tree.now; same_manifest "$1" /tmp/tree.now; }
tree_differs() { ! same_tree "$@" >/dev/null; }   # the tree was changed

# in_unit_cgroup UNIT CMD... : run CMD inside the unit's cgroup, where its device policy
# (a BPF program systemd attaches for DevicePolicy=/DeviceAllow=) applies
in_unit_cgroup() {
  _u="$1"; shift
  sh -c 'echo $$ > "/sys/fs/cgroup/system.slice/$0/cgroup.procs" && exec "$@"' "$_u" "$@"
}
# unit_refuses_device UNIT DEV : opening DEV in the unit's cgroup fails with EPERM
unit_refuses_device() {
  if in_unit_cgroup "$1" sh -c ": < $2" 2>/tmp/device.err; then echo "$2 opened"; return 1; fi
  grep -q 'Operation not permitted' /tmp/device.err || { cat /tmp/device.err; return 1; }
}
