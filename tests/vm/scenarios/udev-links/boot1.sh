# Boot 1 (systemd 252 and udevd, the product as installed, snapbackd enabled): ext4 with a
# UUID and a label on the volume; a snapshot through the running daemon; then /dev/disk/by-uuid
# and by-label must name the volume users mount (not the snapshot, -real or -cow device, which
# carry the same filesystem, nor the disk under it), and mount UUID=/LABEL= must mount it —
# right after the snapshot, and after every block device is re-triggered (change, then add as
# at boot). The snapshot is left in place for boot 2.
. /snapback/systemd-lib.sh
. /scenario/lib.sh

check_eq system-running running "$(systemctl is-system-running)"
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
check_eq activate-succeeded "active success 0" \
  "$(prop snapback-activate ActiveState) $(prop snapback-activate Result) $(prop snapback-activate ExecMainStatus)"
check_eq daemon-active active "$(systemctl is-active snapbackd)"
check_eq volume-is-linear-over-its-disk "0 65536 linear $(majmin /dev/disk/data) 0" "$(dmsetup table snapback-data)"

mkfs.ext4 -q -F -U "$FS_UUID" -L "$FS_LABEL" "$ORIGIN"
udevadm settle --timeout=60
links_name_origin no-snapshot

mkdir -p /mnt/data
mount "$ORIGIN" /mnt/data
echo "before the snapshot" > /mnt/data/file
sync
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data "udev links" 0)"
check_eq snapshot-over-dbus "o \"$SNAP/1\"" "$out"
umount /mnt/data
# how long the origin stayed suspended: under udev each resume inside that window waits for
# udev to finish the device's event (the snapshot's: probed or not, depending on its flags)
n=0
until us="$(journalctl -b -q --no-pager -o verbose _SYSTEMD_UNIT=snapbackd.service SNAPSHOT_ID=1 | sed -n 's/^ *SUSPENDED_US=//p' | head -n1)" &&
      [ -n "$us" ] || [ $n -ge 20 ]; do sleep 0.5; n=$((n + 1)); done
figure snapshot-origin-suspended "${us:-0}" us
check_eq stack-has-snapshot "snapshot-origin snapshot linear linear" \
  "$(for d in snapback-data snapback-data-1 snapback-data-1-cow snapback-data-real; do dmsetup table "$d" | awk 'NR == 1 {print $3}'; done | tr '\n' ' ' | sed 's/ $//')"
udevadm settle --timeout=60
links_name_origin after-snapshot
hidden_unscanned after-snapshot
for d in $HIDDEN; do
  echo "VM-INFO: $d: $(props "$d" | grep -E '^DM_UDEV|^ID_FS|^DEVLINKS' | tr '\n' ' ')"
done

disk_event disk-event
coldplug trigger-change change
coldplug trigger-add add
coldplug trigger-change-again change

journalctl -b --no-pager -o short-monotonic > /out/journal-boot1.txt 2>&1 || true
