# Boot 1: I/O errors under a write load.
# (A) the pool fails every I/O while the volume is written: the kernel invalidates the
#     snapshot, the volume keeps working (no write fails, every fsync'd byte reads back).
#     A failed flush of the pool makes the daemon refuse every change until it is restarted
#     (pool/sticky_flush.rs); restarted, it reads the registry from the device (not from
#     pages whose write-back failed) and records the set `invalid`; Rollback is refused.
# (B) the volume's own disk fails writes while a set is active: the writes fail, the snapshot
#     stays valid and equal to the tree it was taken of, and once the disk is repaired a
#     rollback gives that tree back (with the invalid set of (A) still on the volume).
# (C) the pool fails in the middle of a merge: the kernel stops it, the daemon says so once
#     (and, after a restart, keeps the set: merge-failed or merge-scheduled), the volume
#     reads as the snapshot once the pool is back, Delete is refused.
. /scenario/lib.sh
need_bin snapbackd
need_bin snapbackctl
setup_devices
check init-pool snapbackd init --config /etc/snapback/snapback.toml
check activate snapbackd activate --config /etc/snapback/snapback.toml
mkfs.ext4 -q -F /dev/mapper/snapback-data
mkdir -p $MNT /tmp/keep && mount -t ext4 /dev/mapper/snapback-data $MNT
tree v1
start_bus
start_daemon
check start-daemon owns_name

# ---- (A) the pool fails under the load
check_eq a-snapshot "o \"$SNAP/1\"" "$(snapshot A)"
start_load a
sleep 2
pool_failing
echo "VM-INFO: (A) the pool fails every I/O after $(wc -l < /tmp/ledger) files"
n=0
while [ "$(dm status snapback-data-1 | cut -d' ' -f4-)" != Invalid ] && [ $n -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
check_eq a-kernel-invalidated Invalid "$(dm status snapback-data-1 | cut -d' ' -f4-)"
written=$(wc -l < /tmp/ledger)
sleep 4   # the load goes on over the invalid snapshot and the failing pool
echo "VM-INFO: (A) while the pool fails: set 1 is $(state 1), $(($(wc -l < /tmp/ledger) - written)) files written after the invalidation"
check a-load-went-on test "$(wc -l < /tmp/ledger)" -gt "$written"
pool_healthy
stop_load
# A flush of the pool failed, so nothing the daemon wrote to it since is known to be on disk:
# it refuses every change until it is restarted and has read the registry again (as stratisd
# refuses pool changes after a metadata write failure).
check a-snapshot-refused-until-restart sh -c "! snapbackctl snapshot data 2>/tmp/snap.err"
echo "VM-INFO: (A) snapshot with the pool back: $(cat /tmp/snap.err)"
check a-refusal-says-restart grep -q 'restart snapbackd' /tmp/snap.err
stop_daemon
start_daemon
check a-restart owns_name
check a-state-invalid wait_state 1 invalid 60
check_eq a-no-write-failed "" "$(cat /tmp/load-errors)"
check a-every-fsyncd-write-intact ledger_intact
figure a-files-written-and-verified "$(wc -l < /tmp/ledger)" files
check a-daemon-logged-invalidation grep -q 'snapshot invalidated\|the kernel invalidated the snapshot' /tmp/snapbackd.log
check a-rollback-refused sh -c "! snapbackctl rollback 1 2>/tmp/rb1.err"
echo "VM-INFO: (A) rollback 1: $(cat /tmp/rb1.err)"
check a-rollback-refused-as-invalid grep -qi 'invalid' /tmp/rb1.err
check_eq a-still-invalid invalid "$(state 1)"
cp /tmp/ledger /tmp/keep/ledger-a

# ---- (B) the volume's disk fails writes while set 2 is active
sync
manifest $MNT > /tmp/keep/m2
check_eq b-snapshot "o \"$SNAP/2\"" "$(snapshot B)"
# after the restart the invalid set still holds -real: the origin must copy into set 2
check_eq b-origin-copies snapshot-origin "$(target_of data)"
start_load b
sleep 2
data_failing_writes
echo "VM-INFO: (B) the volume's disk fails writes after $(wc -l < /tmp/ledger) files"
sleep 4
stop_load
check b-writes-failed test -s /tmp/load-errors
echo "VM-INFO: (B) $(wc -l < /tmp/load-errors) writes failed, ext4: $(dmesg | grep -c 'EXT4-fs error') errors logged"
check_eq b-set-still-active active "$(state 2)"
check b-kernel-snapshot-valid sh -c "dmsetup status snapback-data-2 | grep -q ' snapshot [0-9]*/[0-9]* [0-9]*\$'"
check_eq b-snapshot-device-as-taken "$(cat /tmp/keep/m2)" "$(snap_manifest 2)"
data_healthy
umount $MNT
check_eq b-rollback-merging 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0)"
check b-merged wait_gone 2 300
check_eq b-invalid-set-kept invalid "$(state 1)"
check b-fsck-clean e2fsck -fn /dev/mapper/snapback-data
mount -t ext4 /dev/mapper/snapback-data $MNT
check_eq b-volume-as-snapshot "$(cat /tmp/keep/m2)" "$(manifest $MNT)"

# ---- (C) the pool fails in the middle of a merge
tree v3
manifest $MNT > /tmp/keep/m3
check_eq c-snapshot "o \"$SNAP/3\"" "$(snapshot C)"
tree v4
dd if=/dev/urandom of=$MNT/upgrade bs=64k count=128 2>/dev/null
rm -rf $MNT/load; sync
umount $MNT
pool_slow 30
start_alloc=$(dm status snapback-data-3 | awk '{split($4, a, "/"); print a[1]}')
check_eq c-rollback-merging 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/3 0)"
alloc() { dm status snapback-data | awk '$3 == "snapshot-merge" {split($4, a, "/"); print a[1]}'; }
n=0
while [ "$(alloc)" -gt $((start_alloc - 8 * 32)) ] 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
at_fail=$(alloc)
pool_failing
echo "VM-INFO: (C) the pool fails at allocated=$at_fail of $start_alloc"
check c-caught-part-way test "$at_fail" -lt "$start_alloc" -a "$at_fail" -gt 64
n=0
while [ "$(dm status snapback-data | cut -d' ' -f4-)" != "Merge failed" ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n + 1)); done
check_eq c-kernel-merge-failed "Merge failed" "$(dm status snapback-data | cut -d' ' -f4-)"
sleep 2
check_eq c-logged-once 1 "$(grep -c 'the kernel stopped the merge; recording it failed' /tmp/snapbackd.log)"
pool_healthy
# The registry could not be written while the pool failed; as in (A), a restart reads it
# again. Either the monitor's last retry reached the disk once the pool was back (its flush
# was refused, the page was still written back): merge-failed; or it did not, and the daemon
# finds the kernel's merge stopped and defers it to the next boot (the kernel takes no second
# snapshot-merge table over the same COW): merge-scheduled, with the merge begun.
stop_daemon
start_daemon
check c-restart owns_name
n=0
while [ $n -lt 120 ]; do
  case "$(state 3)" in merge-failed | merge-scheduled) break ;; esac
  sleep 0.5; n=$((n + 1))
done
echo "VM-INFO: (C) set 3 after the restart: $(state 3)"
check c-state-after-restart sh -c "case '$(state 3)' in merge-failed | merge-scheduled) true ;; *) false ;; esac"
check_eq c-delete-refused org.snapback.Snapback1.Error.Busy "$(dbus_error Delete objpath:$SNAP/3)"
mount -t ext4 -o ro,noload /dev/mapper/snapback-data $MNT
check_eq c-volume-reads-as-snapshot "$(cat /tmp/keep/m3)" "$(manifest $MNT)"
umount $MNT
check_eq c-retry-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/3 0)"
check_eq c-state-still-scheduled merge-scheduled "$(state 3)"
stop_daemon
keep_save
