# Boot 2 (the upgrade's default: the new kernel). "/" is in use, so the rollback of set 1 is
# scheduled; the ESP is put back at once: entries, kernel files and loader.conf's default as
# at snapshot time, so the next boot picks the old kernel again.
. /scenario/lib.sh
write_config; keep_load
check_eq upgrade-boots-new-kernel "$new" "$(uname -r)"
check activate snapbackd activate --config $CONF --cmdline /proc/cmdline
mount_root
check_eq root-is-upgraded "$(cat /tmp/keep/root-v2)" "$(manifest /mnt/root)"
mount_boot
check_eq boot-is-upgraded "$(cat /tmp/keep/boot-v2)" "$(boot_state)"
start_bus
start_daemon
check start-daemon owns_name
# the old kernel is gone from its place: the entry boots the copies kept under /snapback/
e=/boot/loader/entries/snapback-rollback-1.conf
echo "VM-INFO: rollback entry 1 after the upgrade: $(tr '\n' '|' < $e)"
for f in $(sed -n 's/^\(linux\|initrd\) \([^ ]*\).*/\2/p' $e); do
  check "entry-1-file-exists-$(basename "$f")" test -f "/boot$f"
done
check_eq entry-1-kernel-is-old-kernel "$(sed -n "s|  $mid/$old/linux\$||p" /tmp/keep/boot-v1)" \
  "$(sha256sum < "/boot$(entry_field $e linux)" | cut -c1-64)"
check_eq rollback-while-root-mounted-is-scheduled 's "scheduled"' \
  "$(call Rollback 'oa{sv}' $SNAP/1 0)"
check_eq state-scheduled merge-scheduled "$(state 1)"
check_eq boot-restored-at-schedule "$(cat /tmp/keep/boot-v1)" "$(boot_state)"
check_eq new-kernel-files-gone "" "$(find "/boot/$mid/$new" -type f 2>/dev/null)"
check_eq default-is-old-entry "default $mid-$old.conf" "$(grep '^default' /boot/loader/loader.conf)"
check no-temporaries-left sh -c "! find /boot -name '*.snapback-new' | grep -q ."
stop_daemon
umount /boot
umount /mnt/root
