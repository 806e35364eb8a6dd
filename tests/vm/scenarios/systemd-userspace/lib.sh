# Helpers for the systemd-userspace boot; the shared ones (prop, journal_has, journal_line,
# no_hardening_errors, main_pid, bus_pid, tree, upgrade, same_tree, in_unit_cgroup, …) are in
# guest/systemd/systemd-lib.sh, shared with systemd-units.

. /snapback/systemd-lib.sh
. /scenario/ids.sh

FUSE_DIR=/run/snapback/fuse

# status : the daemon's Status() as busctl prints it, on one line
status() { busctl call $BUS $MGR $BUS.Manager Status; }

# volume_device NAME : the block device Status() reports for a volume ("" when not assembled)
volume_device() {
  status > /tmp/status.txt || return 1
  grep -q "\"$1\" [0-9]* " /tmp/status.txt || return 1
  sed "s/^.*\"$1\" [0-9]* //" /tmp/status.txt | grep -o '"device" s "[^"]*"' | head -n 1 | cut -d'"' -f4
}

# backing_of LOOPDEV : the loop device's backing file as the kernel reports it
backing_of() { cat "/sys/block/$(basename "$1")/loop/backing_file" 2>/dev/null; }

# fuse_loops : loop devices (outside the service) backed by a file of the daemon's FUSE mount
fuse_loops() {
  for _b in /sys/block/loop*/loop/backing_file; do
    [ -e "$_b" ] || continue
    case "$(cat "$_b")" in "$FUSE_DIR"/*) echo "$(basename "$(dirname "$(dirname "$_b")")") $(cat "$_b")" ;; esac
  done
}

# wait_active : until snapbackd.service is active and owns its bus name (after a (re)start)
wait_active() {
  _n=0
  until [ "$(systemctl is-active snapbackd)" = active ] && [ -n "$(bus_pid $BUS)" ] &&
        [ "$(bus_pid $BUS)" = "$(main_pid)" ]; do
    _n=$((_n + 1)); [ $_n -lt 120 ] || { echo "snapbackd not active: $(systemctl is-active snapbackd)"; return 1; }
    sleep 0.5
  done
}

# journal_errors UNIT : what the unit's processes logged at priority err or worse this boot
journal_errors() { journalctl -b -q --no-pager -p err _SYSTEMD_UNIT="$1"; }

# froze_one ID : the daemon logged, for set ID, that it froze exactly one file system while it
# took the set ("origins suspended while taking the set", FROZEN_FILESYSTEMS=1)
froze_one() {
  journal_has SNAPSHOT_ID="$1" FROZEN_FILESYSTEMS=1 | grep -qx 'origins suspended while taking the set' ||
    { echo "no 'origins suspended' entry with FROZEN_FILESYSTEMS=1 for set $1:"
      journalctl -b -q --no-pager -o verbose _SYSTEMD_UNIT=snapbackd.service SNAPSHOT_ID="$1" | grep -E 'MESSAGE=|FROZEN'; return 1; }
}
