# Boot 4: "Roll back to snapshot 2" chosen at the boot menu (the host set loader.conf's default).
# The snapshot-time kernel boots with snapback.rollback=2; activation starts the merge before
# "/" is mounted; the system comes up as set 2 recorded it; the daemon puts the ESP back and
# removes the entry when the set is gone.
. /scenario/lib.sh
write_config; keep_load
efivars_mount
check_eq loader-selected-rollback-entry snapback-rollback-2.conf "$(loader_var LoaderEntrySelected)"
check_eq rollback-entry-boots-old-kernel "$old" "$(uname -r)"
check cmdline-has-rollback-2 grep -qw snapback.rollback=2 /proc/cmdline
t0=$(now_ns)
rc=0; snapbackd activate --config $CONF --cmdline /proc/cmdline >/tmp/activate.out 2>/tmp/activate.err || rc=$?
check_eq activate-rc 0 $rc
figure activate-with-rollback-ms $(( ($(now_ns) - t0) / 1000000 )) ms
check_eq root-merging-before-mount snapshot-merge "$(target_of root)"
echo "VM-INFO: activate: $(cat /tmp/activate.out /tmp/activate.err | tr '\n' '|')"
mount_boot
start_bus
start_daemon
check start-daemon owns_name
check merge-2-finishes wait_gone 2 300
mount_root
check_eq root-equals-snapshot-2 "$(cat /tmp/keep/root-v3)" "$(manifest /mnt/root)"
check init-is-back test -f /mnt/root/usr/bin/init
check_eq boot-equals-snapshot-2 "$(cat /tmp/keep/boot-v3)" "$(boot_state)"
check_eq default-is-old-entry-again "default $mid-$old.conf" "$(grep '^default' /boot/loader/loader.conf)"
check rollback-entry-2-removed-with-set test ! -e /boot/loader/entries/snapback-rollback-2.conf
check_eq kept-copies-pruned "" "$(find /boot/snapback -type f 2>/dev/null)"
stop_daemon
umount /boot
umount /mnt/root
