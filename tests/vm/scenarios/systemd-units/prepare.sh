# Run by guest/init before systemd starts (VM_BOOT = boot number): what the administrator left
# on the system before this boot, following the README's install steps. The initramfs root is
# fresh every boot, so each boot sets it up again; the disks are what persists.
# The pool disk is seen through dm-delay (/dev/mapper/pool): no delay in boot 1; in boot 2 every
# pool I/O waits 50 ms, so the kernel's merge of the scheduled rollback (many scattered chunks,
# one merge step each, started once every volume is assembled) is still running when systemd
# mounts the volume: the point of boot 2. Made here, before udev runs, as early boot
# storage (an initramfs-assembled device) would be.
dmsetup --noudevsync create pool --table \
  "0 $(blockdev --getsz /dev/disk/pool) delay /dev/disk/pool 0 $([ "$VM_BOOT" = 1 ] && echo 0 || echo 50)"

mkdir -p /etc/snapback
cat > /etc/snapback/snapback.toml <<TOML
[pool]
path = "/dev/mapper/pool"

[[volume]]
name = "data"
device = "/dev/disk/data"
auto = true
cow_size = "48M"

[[volume]]
name = "logs"
device = "/dev/disk/logs"
auto = true
cow_size = "8M"
TOML
if [ "$VM_BOOT" = 1 ]; then
  # README: "snapbackd init … systemctl enable --now snapbackd" (enable works offline)
  /usr/libexec/snapbackd init
  systemctl enable snapbackd.service
  # The test's observer: what the activation unit's confinement looks like from inside it
  # (activate-probe.sh, run after `snapbackd activate` in the same unit, so with its settings).
  mkdir -p /etc/systemd/system/snapback-activate.service.d
  printf '[Service]\nExecStartPost=/bin/sh /scenario/activate-probe.sh\n' \
    > /etc/systemd/system/snapback-activate.service.d/probe.conf
else
  # Boot 2: the daemon only on demand (D-Bus activation), the early activation enabled alone
  systemctl enable snapback-activate.service
fi

# Boot 2: the administrator has since put the data volume into /etc/fstab (as the README says:
# mount /dev/mapper/snapback-<volume>). mount-probe.service is the test's observer: ordered
# right after the mount and before local-fs.target, it records what the volume shows at the
# instant it is mounted, before snapbackd (a multi-user service) has even started.
if [ "$VM_BOOT" = 2 ]; then
  echo "/dev/mapper/snapback-data /mnt/data ext4 defaults 0 0" >> /etc/fstab
  cat > /etc/systemd/system/mount-probe.service <<UNIT
[Unit]
Description=VM test: what /mnt/data shows the instant it is mounted
DefaultDependencies=no
Requires=mnt-data.mount
After=mnt-data.mount
Before=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /scenario/probe.sh
UNIT
  mkdir -p /etc/systemd/system/local-fs.target.wants
  ln -s ../mount-probe.service /etc/systemd/system/local-fs.target.wants/mount-probe.service
fi
