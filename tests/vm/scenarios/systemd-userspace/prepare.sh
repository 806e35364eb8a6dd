# Run by guest/init before systemd starts (VM_BOOT = boot number): the machine as it is before
# this boot. The initramfs root is fresh every boot; the disks persist.
# /var/lib/snapback (the unit's StateDirectory=) is on persistent storage, as /var is on any
# installed system: an ext4 on the "state" disk, mounted by systemd from /etc/fstab by UUID
# (udev's by-uuid link), so snapbackd.service is ordered after it (StateDirectory= implies
# RequiresMountsFor=).
. /scenario/ids.sh
[ "$VM_BOOT" != 1 ] || mkfs.ext4 -q -F -U $STATE_UUID /dev/disk/state
mkdir -p /var/lib/snapback
echo "UUID=$STATE_UUID /var/lib/snapback ext4 defaults 0 0" >> /etc/fstab
# Boot 1: the administrator installs the userspace backend on the running system (boot1.sh).
# Boot 2: what boot 1 left in /etc, put back: the config, the drop-in, snapback-activate
# masked, snapbackd enabled, and the volume's fstab line (README).
if [ "$VM_BOOT" = 2 ]; then
  cp /scenario/snapback.toml /etc/snapback/snapback.toml
  mkdir -p /etc/systemd/system/snapbackd.service.d
  cp /scenario/backend.conf /etc/systemd/system/snapbackd.service.d/backend.conf
  systemctl mask snapback-activate.service
  systemctl enable snapbackd.service
  mkdir -p /mnt/data
  echo "UUID=$FS_UUID /mnt/data ext4 nofail,x-systemd.requires=snapbackd.service 0 0" >> /etc/fstab
fi
