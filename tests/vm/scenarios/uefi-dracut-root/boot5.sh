# Boot 5 (harness): snapbackd on the rolled-back system puts the ESP back as set 2 recorded it
# (before it serves the bus) and finishes the merge dracut started in boot 4; the set goes with
# its rollback entry and kept copies.
. /scenario/harness.sh
write_config
check activate-follows-merge snapbackd activate --config $CONF --cmdline /proc/cmdline
check_eq root-still-merging snapshot-merge "$(dm_target snapback-root)"
mount_boot
start_bus
t0=$(now_ns)
start_daemon
check start-daemon-restoring-boot wait_daemon 300
figure daemon-start-restoring-boot-ms "$(ms_since "$t0")" ms
check_eq boot-equals-snapshot-2 "$(cat /in/boot-v3)" "$(boot_state)"
check_eq default-is-old-entry-again "default $mid-$old.conf" "$(grep '^default' /boot/loader/loader.conf)"
check old-kernel-back test -f "/boot/$mid/$old/linux"
check no-temporaries-left sh -c "! find /boot -name '*.snapback-new' | grep -q ."
check merge-2-finishes wait_gone 2 300
check_eq root-linear-after-merge linear "$(dm_target snapback-root)"
check rollback-entry-2-removed-with-set test ! -e /boot/loader/entries/snapback-rollback-2.conf
check_eq kept-copies-pruned "" "$(find /boot/snapback -type f 2>/dev/null)"
mount_root
check_eq root-equals-snapshot-2 "$(cat /mnt/root/vmtest/expected-manifest)" "$(root_manifest /mnt/root)"
check init-is-back test -x /mnt/root/sbin/init
stop_daemon
umount /boot
umount /mnt/root
