# Boot 6, after the power cut in the middle of the ESP restore: the machine still boots (the
# default had not been switched yet: the upgrade's kernel, every file it boots still there);
# activation merges "/" (the rollback was committed before the restore began); the daemon
# finishes the restore at its start.
. /scenario/lib.sh
write_config; keep_load
efivars_mount
echo "VM-INFO: booted $(uname -r) via $(loader_var LoaderEntrySelected) after the cut"
check_eq after-cut-boots-upgrade-default "$mid-$new.conf" "$(loader_var LoaderEntrySelected)"
check activate-after-cut snapbackd activate --config $CONF --cmdline /proc/cmdline
check_eq root-merging-after-cut snapshot-merge "$(target_of root)"
mount_boot
check_ne esp-half-restored-before-daemon "$(cat /tmp/keep/boot-v5)" "$(boot_state)"
start_bus
t0=$(now_ns)
start_daemon
check start-daemon-finishing-restore wait_daemon 300
figure daemon-start-finishing-boot-restore-ms $(( ($(now_ns) - t0) / 1000000 )) ms
check_eq daemon-finished-esp-restore "$(cat /tmp/keep/boot-v5)" "$(boot_state)"
check_eq default-is-old-after-finish "default $mid-$old.conf" "$(grep '^default' /boot/loader/loader.conf)"
check merge-3-finishes wait_gone 3 300
mount_root
check_eq root-equals-snapshot-3 "$(cat /tmp/keep/root-v5)" "$(manifest /mnt/root)"
check no-temporaries-left sh -c "! find /boot -name '*.snapback-new' | grep -q ."
check rollback-entry-3-removed test ! -e /boot/loader/entries/snapback-rollback-3.conf
stop_daemon
umount /boot
umount /mnt/root
