# Run by guest/init before systemd starts (VM_BOOT = boot number): the administrator's setup,
# as the README has it. The root is the initramfs, fresh every boot; the disks persist.
. /scenario/lib.sh
mkdir -p /etc/snapback
cat > /etc/snapback/snapback.toml <<TOML
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "data"
device = "/dev/disk/data"
auto = true
cow_size = "16M"
TOML
if [ "$VM_BOOT" = 1 ]; then
  /usr/libexec/snapbackd init
else
  # Boot 2: the volume is in /etc/fstab by its filesystem UUID, as installers write it. The
  # snapshot taken in boot 1 is still there: the snapshot device carries the same UUID.
  echo "UUID=$FS_UUID /mnt/data ext4 defaults 0 0" >> /etc/fstab
fi
systemctl enable snapbackd.service
