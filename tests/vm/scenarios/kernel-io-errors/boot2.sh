# Boot 2: the disks are healthy again. The retried merge of (C) resumes at activation and
# finishes; the set (A) invalidated stays invalid and gets no snapshot device (its COW's header
# may still say valid: the kernel could not write it while the pool failed). After a restart
# the origin is plain beside that registered set, and a new snapshot must still receive its
# copies and roll back; then Delete removes set 1.
. /scenario/lib.sh
setup_devices
keep_load
check activate snapbackd activate --config /etc/snapback/snapback.toml
check_eq merging-after-activate snapshot-merge "$(target_of data)"
echo "VM-INFO: devices after activate: $(dm ls | awk '{print $1}' | tr '\n' ' ')"
echo "VM-INFO: set 1's device: $(dmsetup status snapback-data-1 2>&1)"
check no-device-for-the-invalid-set sh -c "! dmsetup ls | grep -q '^snapback-data-1[[:space:]]'"
start_bus
start_daemon
check start-daemon owns_name
check c-merge-finished wait_gone 3 300
check_eq a-invalid-after-reboot invalid "$(state 1)"
check e2fsck-clean e2fsck -fn /dev/mapper/snapback-data
mkdir -p $MNT && mount -t ext4 /dev/mapper/snapback-data $MNT
check_eq c-volume-as-snapshot "$(cat /tmp/keep/m3)" "$(manifest $MNT)"
umount $MNT
# A restart assembles the volume without the invalid set's device: the origin is plain again
# while set 1 is still registered. A snapshot now must make it copy (the kernel's table says
# so, not the registry), and roll back to what it was taken of.
stop_daemon
start_daemon
check restart owns_name
check_eq origin-plain-beside-an-invalid-set linear "$(target_of data)"
mount -t ext4 /dev/mapper/snapback-data $MNT
check_eq d-snapshot "o \"$SNAP/4\"" "$(snapshot D)"
check_eq d-origin-copies snapshot-origin "$(target_of data)"
manifest $MNT > /tmp/m4
echo changed > $MNT/etc/f1; rm $MNT/etc/f2; dd if=/dev/urandom of=$MNT/upgrade-2 bs=64k count=32 2>/dev/null; sync
umount $MNT
check_eq d-rollback-merging 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/4 0)"
check d-merged wait_gone 4 300
mount -t ext4 /dev/mapper/snapback-data $MNT
check_eq d-volume-as-snapshot "$(cat /tmp/m4)" "$(manifest $MNT)"
umount $MNT
check_eq a-delete-invalid "" "$(busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/1 2>&1)"
check a-gone wait_gone 1 30
check no-set-devices-left sh -c "! dmsetup ls | grep -q '^snapback-data-'"
check_eq volume-linear-without-sets linear "$(target_of data)"
stop_daemon
