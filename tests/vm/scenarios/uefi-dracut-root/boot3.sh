# Boot 3 (harness): the daemon finishes set 1's merge (started by dracut in boot 2) and removes
# the set with its rollback entry. Then set 2 and an upgrade that leaves the system unbootable:
# /sbin/init removed, the new kernel the default, the old kernel's entry and files removed.
. /scenario/harness.sh
write_config
efivars_mount
check_eq setup-boot-through-harness-entry "$SETUP_ENTRY" "$(loader_var LoaderEntrySelected)"
check activate-follows-merge snapbackd activate --config $CONF --cmdline /proc/cmdline
check_eq root-still-merging snapshot-merge "$(dm_target snapback-root)"
mount_boot
start_bus
t0=$(now_ns)
start_daemon
check start-daemon owns_name
figure daemon-start-ms "$(ms_since "$t0")" ms
check merge-1-finishes wait_gone 1 300
check_eq root-linear-after-merge linear "$(dm_target snapback-root)"
mount_root
check_eq root-equals-snapshot-1 "$(cat /mnt/root/vmtest/expected-manifest)" "$(root_manifest /mnt/root)"
check rollback-entry-1-removed-with-set test ! -e /boot/loader/entries/snapback-rollback-1.conf
check_eq kept-copies-pruned "" "$(find /boot/snapback -type f 2>/dev/null)"

# set 2 over a changed system (so that its tree differs from set 1's)
as_installed "$old"
echo "release 1.1" > /mnt/root/etc/release
root_manifest /mnt/root > /mnt/root/vmtest/expected-manifest
boot_state > /out/boot-v3
sync
out="$(call Snapshot 'assa{sv}' 1 root "before upgrade 2" 0)"
check_eq snapshot-2 "o \"$SNAP/2\"" "$out"
figure pool-used-with-set-2 "$(pool_used)" bytes
e=/boot/loader/entries/snapback-rollback-2.conf
check rollback-entry-2-on-esp grep -q ' snapback.rollback=2$' $e
# the same old kernel and initramfs as set 1: the same kept copies (their names are hashes)
check_eq rollback-entry-2-initrd "/snapback/$(file_sha "/boot/$mid/$old/initrd" | cut -c1-16)/initrd" \
  "$(entry_field $e initrd)"

# the upgrade that breaks booting
upgrade_root /mnt/root
rm -rf "/mnt/root/usr/lib/modules/$old"
rm /mnt/root/sbin/init
upgrade_boot remove-old
check_eq default-is-new-after-upgrade-2 "default $mid-$new.conf" "$(grep '^default' /boot/loader/loader.conf)"
check old-kernel-removed test ! -e "/boot/$mid/$old/linux"
stop_daemon
umount /boot
umount /mnt/root
