# Boot 5 (default: entry rb999, the old kernel with snapback.rollback=999, a set that does not
# exist): activation boots normally and says so. Then set 3, an upgrade, a scheduled rollback
# whose ESP restore is cut by a power loss half-way (the ESP behind a dm-delay that slows
# writes, so the cut lands between the restored kernel and the switched default).
. /scenario/lib.sh
write_config; keep_load
efivars_mount
check_eq loader-selected-rb999 rb999.conf "$(loader_var LoaderEntrySelected)"
check cmdline-has-rollback-999 grep -qw snapback.rollback=999 /proc/cmdline
rc=0; snapbackd activate --config $CONF --cmdline /proc/cmdline >/tmp/activate.out 2>/tmp/activate.err || rc=$?
check_eq activate-999-boots-normally 0 $rc
# what the console shows in a real initramfs (activate's stderr)
sed 's/^/VM-INFO: activate says: /' /tmp/activate.err
check activate-999-says-ignored grep -q 'snapback.rollback=999 ignored, booting normally' /tmp/activate.err
check_eq root-not-merging-999 linear "$(target_of root)"
mount_root
check_eq root-unchanged-999 "$(cat /tmp/keep/root-v3)" "$(manifest /mnt/root)"
# the ESP through a dm-delay: writes 150 ms late, reads at once
part="$(esp_part)"
n=0; while [ ! -b "$part" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
dm create slowesp --table "0 $(sectors "$part") delay $part 0 0 $part 0 150"
mkdir -p /boot; mount -t vfat /dev/mapper/slowesp /boot
# the pick of rb999 was for this boot only: the administrator puts the default back (set 3
# records loader.conf as it is now, and its restore brings this default back)
sed -i "s/^default .*/default $mid-$old.conf/" /boot/loader/loader.conf
rm /boot/loader/entries/rb999.conf
sync
start_bus
start_daemon
check start-daemon owns_name
out="$(call Snapshot 'assa{sv}' 1 root "before upgrade 3" 0)"
check_eq snapshot-3 "o \"$SNAP/3\"" "$out"
manifest /mnt/root > /tmp/keep/root-v5
boot_state > /tmp/keep/boot-v5
upgrade_root /mnt/root
upgrade_boot
sync
keep_save
call Rollback 'oa{sv}' $SNAP/3 0 > /tmp/rollback.out 2>&1 &
# wait for the old kernel to be back in place, then cut at once (the rollback first records
# the upgrade's boot files as its undo: a minute or more with a debug build under TCG)
n=0
while [ ! -f "/boot/$mid/$old/linux" ] && [ $n -lt 8000 ]; do sleep 0.05; n=$((n + 1)); done
default_at_cut="$(grep '^default' /boot/loader/loader.conf)"
echo "$default_at_cut" > /tmp/keep/default-at-cut
ls -la "/boot/$mid" "/boot/$mid/$old" /boot/loader/entries > /tmp/keep/esp-at-cut 2>&1 || true
keep_save
echo "VM-INFO: at the cut: $default_at_cut; $(tr '\n' '|' < /tmp/keep/esp-at-cut)"
check old-kernel-restored-before-cut test -f "/boot/$mid/$old/linux"
check_eq cut-before-default-switched "default $mid-$new.conf" "$default_at_cut"
power_cut
