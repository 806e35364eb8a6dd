# Boot 3 (loader.conf default, put back by the rollback: the old kernel). Activation merges the
# scheduled rollback before "/" is mounted; "/" is the snapshot; once the merge is over the set
# and its rollback entry are gone. Then set 2 and a second upgrade, for the boot menu (boot 4).
. /scenario/lib.sh
write_config; keep_load
check_eq rollback-boots-old-kernel "$old" "$(uname -r)"
efivars_mount
check_eq loader-selected-old-entry "$mid-$old.conf" "$(loader_var LoaderEntrySelected)"
check activate-starts-merge snapbackd activate --config $CONF --cmdline /proc/cmdline
check_eq root-merging-before-mount snapshot-merge "$(target_of root)"
mount_boot
start_bus
start_daemon
check start-daemon owns_name
check merge-1-finishes wait_gone 1 300
check_eq root-linear-after-merge linear "$(target_of root)"
mount_root
check_eq root-equals-snapshot-1 "$(cat /tmp/keep/root-v1)" "$(manifest /mnt/root)"
check old-modules-back test -f "/mnt/root/usr/lib/modules/$old/modules.dep"
check new-modules-gone test ! -e "/mnt/root/usr/lib/modules/$new"
check_eq boot-equals-snapshot-1 "$(cat /tmp/keep/boot-v1)" "$(boot_state)"
check rollback-entry-1-removed-with-set test ! -e /boot/loader/entries/snapback-rollback-1.conf
check_eq kept-copies-pruned "" "$(find /boot/snapback -type f 2>/dev/null)"
check_eq pool-used-after-set-1-gone "$(cat /tmp/keep/used0 2>/dev/null || echo unknown)" "$(pool_used)"

# set 2, then an upgrade that (on a real machine) leaves it unbootable
used0="$(pool_used)"
out="$(call Snapshot 'assa{sv}' 1 root "before upgrade 2" 0)"
check_eq snapshot-2 "o \"$SNAP/2\"" "$out"
figure pool-used-with-set-2 "$(pool_used)" bytes
check rollback-entry-2-on-esp grep -q 'snapback.rollback=2$' /boot/loader/entries/snapback-rollback-2.conf
manifest /mnt/root > /tmp/keep/root-v3
boot_state > /tmp/keep/boot-v3
upgrade_root /mnt/root
rm /mnt/root/usr/bin/init   # "the upgrade broke booting"
upgrade_boot
check_eq default-is-new-after-upgrade-2 "default $mid-$new.conf" "$(grep '^default' /boot/loader/loader.conf)"
stop_daemon
umount /boot
umount /mnt/root
keep_save
