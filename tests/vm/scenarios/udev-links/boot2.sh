# Boot 2 (a reboot, the snapshot still there): snapback-activate assembles the stack
# (-real, -cow, snapshot, origin) while udev coldplugs every disk; /etc/fstab mounts the volume
# by its filesystem UUID. The mount must be the volume users mount, the links must name it,
# the snapshot, -real and -cow must be unscanned — also after every block device is triggered
# again.
. /snapback/systemd-lib.sh
. /scenario/lib.sh

check_eq system-running running "$(systemctl is-system-running)"
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
check_eq activate-succeeded "active success 0" \
  "$(prop snapback-activate ActiveState) $(prop snapback-activate Result) $(prop snapback-activate ExecMainStatus)"
check_eq snapshot-still-there "snapshot-origin snapshot" \
  "$(dmsetup table snapback-data | awk '{print $3}') $(dmsetup table snapback-data-1 | awk '{print $3}')"
check_eq set-still-active active "$(state 1)"

# the fstab mount by UUID, made by systemd at boot
check_eq fstab-mount-active active "$(systemctl is-active mnt-data.mount)"
check_eq fstab-mount-is-origin "$(majmin "$ORIGIN")" "$(mounted_dev /mnt/data)"
check_eq fstab-mount-content "before the snapshot" "$(cat /mnt/data/file 2>&1)"
echo "VM-INFO: mnt-data.mount What=$(prop mnt-data.mount What), mounted $(mounted_dev /mnt/data), origin $(majmin "$ORIGIN")"
umount /mnt/data

udevadm settle --timeout=60
links_name_origin boot2
hidden_unscanned boot2
disk_event boot2-disk-event
coldplug boot2-trigger-change change
coldplug boot2-trigger-add add

journalctl -b --no-pager -o short-monotonic > /out/journal-boot2.txt 2>&1 || true
