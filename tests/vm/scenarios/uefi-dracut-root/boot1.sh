# Boot 1 (harness, entry vm-setup): the administrator's system. Pool, the root volume with a
# small system whose /sbin/init checks itself, the ESP as installed (the old kernel's dracut
# entry the default). Snapshot of the root set records the ESP and writes the rollback entry;
# the "upgrade" installs the new kernel, its dracut initramfs and its entry as the default and
# changes "/"; the rollback of the mounted root is scheduled and puts the ESP back at once.
. /scenario/harness.sh
need_bin snapbackd
efivars_mount
check_eq setup-boot-through-harness-entry "$SETUP_ENTRY" "$(loader_var LoaderEntrySelected)"
write_config
check init-pool snapbackd init --config $CONF
check activate snapbackd activate --config $CONF --cmdline /proc/cmdline
mkfs.ext4 -q -F /dev/mapper/snapback-root
mount_root
make_system /mnt/root
root_manifest /mnt/root > /mnt/root/vmtest/expected-manifest
cp /mnt/root/vmtest/expected-manifest /out/root-v1
mount_boot
as_installed "$old"
boot_state > /out/boot-v1
check boot-state-has-old-dracut-initrd grep -q "  $mid/$old/initrd\$" /out/boot-v1
sync

start_bus
start_daemon
check start-daemon owns_name
t0=$(now_ns)
out="$(call Snapshot 'assa{sv}' 1 root "before upgrade" 0)"
figure snapshot-with-boot-record-ms "$(ms_since "$t0")" ms
check_eq snapshot-1 "o \"$SNAP/1\"" "$out"
figure pool-used-with-set-1 "$(pool_used)" bytes
e=/boot/loader/entries/snapback-rollback-1.conf
check rollback-entry-1-on-esp test -f $e
echo "VM-INFO: rollback entry 1: $(tr '\n' '|' < $e)"
cp $e /out/entry-1 2>/dev/null || true
# it boots kept copies of the old kernel and of its dracut initramfs, with the entry's options
check_eq rollback-entry-1-kernel "/snapback/$(file_sha "/boot/$mid/$old/linux" | cut -c1-16)/linux" \
  "$(entry_field $e linux)"
check_eq rollback-entry-1-initrd "/snapback/$(file_sha "/boot/$mid/$old/initrd" | cut -c1-16)/initrd" \
  "$(entry_field $e initrd)"
check_eq rollback-entry-1-kept-initrd-is-dracut-image "$(file_sha "/boot/$mid/$old/initrd")" \
  "$(file_sha "/boot$(entry_field $e initrd)")"
check_eq rollback-entry-1-options "$(entry_field /in/old.conf options) snapback.rollback=1" \
  "$(entry_field $e options)"
check_eq record-leaves-boot-alone "$(cat /out/boot-v1)" "$(boot_state)"

# the upgrade, with the daemon running (as under dnf)
upgrade_root /mnt/root
upgrade_boot
sync
check_eq upgrade-made-new-default "default $mid-$new.conf" "$(grep '^default' /boot/loader/loader.conf)"
check_ne upgrade-changed-boot "$(cat /out/boot-v1)" "$(boot_state)"
t0=$(now_ns)
check_eq rollback-while-root-mounted-is-scheduled 's "scheduled"' "$(call Rollback 'oa{sv}' $SNAP/1 0)"
figure rollback-schedule-with-boot-restore-ms "$(ms_since "$t0")" ms
check_eq state-scheduled merge-scheduled "$(state 1)"
check_eq boot-restored-at-schedule "$(cat /out/boot-v1)" "$(boot_state)"
check_eq new-kernel-files-gone "" "$(find "/boot/$mid/$new" -type f 2>/dev/null)"
check new-entry-gone test ! -e "/boot/loader/entries/$mid-$new.conf"
check_eq default-is-old-entry "default $mid-$old.conf" "$(grep '^default' /boot/loader/loader.conf)"
check no-temporaries-left sh -c "! find /boot -name '*.snapback-new' | grep -q ."
figure pool-used-with-undo-record "$(pool_used)" bytes
stop_daemon
umount /boot
umount /mnt/root
