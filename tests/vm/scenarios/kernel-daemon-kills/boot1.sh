# snapbackd killed, not the machine: what it left half done on device-mapper (an origin left
# suspended with a table loaded, a device created but never resumed, a COW left suspended in a
# grow) must be settled by the next start, not kept: a suspended origin stops every write to
# the volume (the mounted root's) until somebody resumes it. (a)-(c) leave each state exactly
# (dmsetup, as the kill would); (d) kills the real daemon at random moments of Snapshot and
# Delete; (e) the set taken first still rolls back to its content.
. /scenario/lib.sh
need_bin snapbackd
write_config
check init-pool snapbackd init --config /etc/snapback/snapback.toml
check activate snapbackd activate --config /etc/snapback/snapback.toml
mkfs.ext4 -q -F /dev/mapper/snapback-data
mount_data
: > /tmp/ledger
i=0; while [ $i -lt 20 ]; do write_ledger "base-$i" 64; i=$((i + 1)); done
start_bus
start_daemon
check start-daemon owns_name
stop_daemon
S=$(sectors /dev/disk/data)

# (b) first, while the volume has no set: -real created by a Snapshot that was killed before
# the device's first resume (no live table). The next Snapshot reuses it: stacked on a device
# without a table, every write to the volume would fail.
dm create snapback-data-real -u "$(uuid_of real)" --notable
dm load snapback-data-real --table "0 $S linear $(majmin /dev/disk/data) 0"
check_eq b-real-not-live no "$(live snapback-data-real && echo yes || echo no)"
start_daemon
check b-start owns_name
manifest $MNT > /tmp/manifest-1
check_eq b-snapshot "o \"$SNAP/1\"" "$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data first 0 2>&1)"
check b-real-live live snapback-data-real
check_eq b-origin-copies snapshot-origin "$(target_of data)"
check b-write-after-snapshot write_within 20 b-after 512
check b-ledger ledger_intact
stop_daemon

# (a) an origin left suspended by a kill in the middle of a table swap, with the table it was
# about to put in place loaded (here linear: what the swap back after the last Delete loads,
# which would silently stop set 1 getting its copies), and a stray COW device.
dm create snapback-data-9-cow -u "$(uuid_of cow-9)" --table "0 2048 error"
dm suspend snapback-data
dm load snapback-data --table "0 $S linear $(majmin /dev/disk/data) 0"
blocked_writer a
sleep 1
check_eq a-writer-blocked no "$([ -e /tmp/done-a ] && echo yes || echo no)"
start_daemon
check a-start owns_name
check a-origin-resumed not_suspended snapback-data
check_eq a-origin-still-copies snapshot-origin "$(target_of data)"
check a-loaded-table-dropped no_inactive snapback-data
check a-stray-removed sh -c "! dm info snapback-data-9-cow >/dev/null 2>&1"
check a-blocked-write-finished wait_file /tmp/done-a 20
check a-ledger ledger_intact
stop_daemon

# (c) a COW left suspended in the middle of its growth (reload): the origin's first writes
# copy into it, so they wait too.
dm suspend snapback-data-1-cow
blocked_writer c
sleep 1
check_eq c-writer-blocked no "$([ -e /tmp/done-c ] && echo yes || echo no)"
start_daemon
check c-start owns_name
check c-cow-resumed not_suspended snapback-data-1-cow
check c-blocked-write-finished wait_file /tmp/done-c 20
check c-ledger ledger_intact

# (d) SIGKILL at random moments of Snapshot and Delete (sets 2.. come and go; set 1 stays)
kills=0; found_suspended=0; k=0
while [ $k -lt 10 ]; do
  victim="$(set_paths | grep -v "$SNAP/1\$" | head -n 1 || true)"
  if [ $((k % 2)) -eq 1 ] && [ -n "$victim" ]; then
    busctl call $BUS $MGR $BUS.Manager Delete o "$victim" >/dev/null 2>&1 &
  else
    busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data "kill $k" 0 >/dev/null 2>&1 &
  fi
  call=$!
  sleep "$(random_delay)"
  kill_daemon; kills=$((kills + 1))
  wait $call 2>/dev/null || true
  for d in $(dm ls | awk '/^snapback-data/ {print $1}'); do
    not_suspended "$d" && live "$d" || { found_suspended=$((found_suspended + 1)); break; }
  done
  start_daemon
  check d-start-$k owns_name
  check d-all-running-$k all_running
  check d-write-$k write_within 20 "d-$k" 128
  # an interrupted Delete leaves its set invalid ("delete it again"): do so
  for p in $(set_paths); do
    [ "$(state "${p##*/}")" = invalid ] && busctl call $BUS $MGR $BUS.Manager Delete o "$p" >/dev/null
  done
  k=$((k + 1))
done
figure kernel-daemon-kills/kills $kills kills
figure kernel-daemon-kills/kills-leaving-a-device-half-done $found_suspended kills
check d-ledger ledger_intact
check_eq d-set-1-active active "$(state 1)"

# (e) set 1, taken in (b), rolls back to what the volume held then
umount $MNT
check_eq e-rollback 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
check e-merged wait_gone 1 180
mount_data
check_eq e-content-as-set-1 "$(cat /tmp/manifest-1)" "$(manifest $MNT)"
stop_daemon
umount $MNT
