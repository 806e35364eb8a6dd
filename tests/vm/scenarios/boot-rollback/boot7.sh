# Boot 7: the restore the daemon finished in boot 6 is what the firmware boots now: the old
# kernel by loader.conf's default; "/" stays the snapshot.
. /scenario/lib.sh
write_config; keep_load
check_eq boots-old-kernel-after-finished-restore "$old" "$(uname -r)"
efivars_mount
check_eq loader-selected-old-entry "$mid-$old.conf" "$(loader_var LoaderEntrySelected)"
check activate snapbackd activate --config $CONF --cmdline /proc/cmdline
check_eq root-linear linear "$(target_of root)"
mount_root
check_eq root-still-snapshot-3 "$(cat /tmp/keep/root-v5)" "$(manifest /mnt/root)"
mount_boot
check_eq boot-still-snapshot-3 "$(cat /tmp/keep/boot-v5)" "$(boot_state)"
umount /boot /mnt/root
