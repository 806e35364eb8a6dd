# Boot 2: the machine's own boot, OVMF → systemd-boot → loader.conf's default (put back by the
# scheduled rollback: the old kernel's entry) → the old kernel with its dracut initramfs, whose
# snapback hook ran `snapbackd activate`: the scheduled merge started there, before dracut
# mounted root. This runs in the system's own /sbin/init (rootfs-init) on that root.
. /scenario/lib.sh
check_eq boots-old-kernel "$old" "$(uname -r)"
efivars_mount
check_eq loader-selected-old-entry "$mid-$old.conf" "$(loader_var LoaderEntrySelected)"
check cmdline-has-no-rollback-parameter sh -c '! grep -q snapback.rollback /proc/cmdline'
check_eq root-is-the-snapback-volume /dev/mapper/snapback-root \
  "$(awk '$2 == "/" && $1 != "rootfs" {print $1}' /proc/mounts | tail -n 1)"
check dracut-mounted-root sh -c 'dmesg | grep -q "dracut: Mounted root filesystem /dev/mapper/snapback-root"'
# merging now, and the file system already sees the snapshot: the merge started before the
# mount (no daemon runs on this system; nothing else could have started it)
check_eq root-merging snapshot-merge "$(dm_target snapback-root)"
check_eq root-equals-snapshot-1 "$(cat /vmtest/expected-manifest)" "$(root_manifest /)"
check upgrade-marker-gone test ! -e /UPGRADED
check new-kernel-modules-gone test ! -e "/usr/lib/modules/$new"
check old-kernel-modules-there test -f "/usr/lib/modules/$old/modules.dep"
echo "VM-INFO: root device: $(dmsetup table snapback-root); status $(dmsetup status snapback-root)"
figure kernel-uptime-at-system-init-ms "$(awk '{printf "%d", $1 * 1000}' /tmp/init-uptime)" ms
# for whoever reads a failure: the kernel's log and command line (work/…/out-bootN/)
dmesg > /out/dmesg; cat /proc/cmdline > /out/cmdline
