# Boot 4: "Roll back to snapshot 2" chosen at the menu. systemd-boot starts the kept copy of the
# old kernel with the kept copy of its dracut initramfs and snapback.rollback=2; dracut's hook
# runs `snapbackd activate`, which commits set 2's rollback and starts the merge before root is
# mounted; the system comes up as set 2 recorded it, its /sbin/init (which the upgrade had
# removed) running this script. The ESP is put back only when snapbackd runs (boot 5).
. /scenario/lib.sh
efivars_mount
check_eq loader-selected-rollback-entry snapback-rollback-2.conf "$(loader_var LoaderEntrySelected)"
check_eq rollback-entry-boots-old-kernel "$old" "$(uname -r)"
check cmdline-has-rollback-2 grep -qw snapback.rollback=2 /proc/cmdline
check cmdline-has-entry-options grep -q 'root=/dev/mapper/snapback-root rootfstype=ext4 ro ' /proc/cmdline
echo "VM-INFO: cmdline: $(cat /proc/cmdline)"
check_eq root-is-the-snapback-volume /dev/mapper/snapback-root \
  "$(awk '$2 == "/" && $1 != "rootfs" {print $1}' /proc/mounts | tail -n 1)"
check dracut-mounted-root sh -c 'dmesg | grep -q "dracut: Mounted root filesystem /dev/mapper/snapback-root"'
check_eq root-merging snapshot-merge "$(dm_target snapback-root)"
check_eq root-equals-snapshot-2 "$(cat /vmtest/expected-manifest)" "$(root_manifest /)"
check init-is-back test -x /sbin/init
check upgrade-marker-gone test ! -e /UPGRADED
check old-kernel-modules-back test -f "/usr/lib/modules/$old/modules.dep"
check new-kernel-modules-gone test ! -e "/usr/lib/modules/$new"
# the window until snapbackd runs: the ESP is still the upgrade's (its entry there, the old
# kernel's files not back; loader.conf names the rollback entry, as the host set it)
check esp-not-yet-restored test -f "/boot/loader/entries/$mid-$new.conf" -a ! -e "/boot/$mid/$old/linux"
figure kernel-uptime-at-system-init-rollback-entry-ms "$(awk '{printf "%d", $1 * 1000}' /tmp/init-uptime)" ms
# for whoever reads a failure: the kernel's log and command line (work/…/out-bootN/)
dmesg > /out/dmesg; cat /proc/cmdline > /out/cmdline
