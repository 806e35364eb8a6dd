# Boot 2: the disks are healthy again. The retried merge of (C) resumes at activation and
# finishes; the set (A) invalidated stays invalid and gets no snapshot device (its COW's header
# may still say valid: the kernel could not write it while the pool failed); Delete removes it.
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
check_eq a-delete-invalid "" "$(busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/1 2>&1)"
check a-gone wait_gone 1 30
check no-set-devices-left sh -c "! dmsetup ls | grep -q '^snapback-data-'"
check_eq volume-linear-without-sets linear "$(target_of data)"
# the volume still takes snapshots and rolls back
check_eq d-snapshot "o \"$SNAP/4\"" "$(snapshot D)"
manifest $MNT > /tmp/m4
echo changed > $MNT/etc/f1; rm $MNT/etc/f2; sync
umount $MNT
check_eq d-rollback-merging 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/4 0)"
check d-merged wait_gone 4 300
mount -t ext4 /dev/mapper/snapback-data $MNT
check_eq d-volume-as-snapshot "$(cat /tmp/m4)" "$(manifest $MNT)"
umount $MNT
stop_daemon
