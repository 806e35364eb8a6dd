# Run by guest/init before systemd starts: the machine as it is before the administrator
# installs snapback's userspace backend. The initramfs root is fresh every boot (this scenario
# has one boot); the disks persist.
# /var/lib/snapback (the unit's StateDirectory=) is on persistent storage, as /var is on any
# installed system: an ext4 on the "state" disk, mounted by systemd from /etc/fstab by UUID
# (udev's by-uuid link), so snapbackd.service is ordered after it (StateDirectory= implies
# RequiresMountsFor=).
mkfs.ext4 -q -F -U 5a4b0001-0000-4000-8000-00000000005b /dev/disk/state
mkdir -p /var/lib/snapback
echo "UUID=5a4b0001-0000-4000-8000-00000000005b /var/lib/snapback ext4 defaults 0 0" >> /etc/fstab
