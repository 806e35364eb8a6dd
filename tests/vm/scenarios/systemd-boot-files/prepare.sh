# Run by guest/init before systemd starts: a machine whose root volume is "data" (named in
# [boot]), with /boot on the root file system and an ESP of its own mounted at /boot/efi (a
# tmpfs here: a separate mount, as the real one is), systemd-boot style: loader.conf's default,
# one entry, its kernel in the machine-id layout; and a kernel-named file at the top of /boot.
# snapbackd enabled as the README says; it runs under the shipped unit (ProtectSystem=strict).
mkdir -p /etc/snapback
cat > /etc/snapback/snapback.toml <<TOML
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "data"
device = "/dev/disk/data"
auto = true
cow_size = "8M"

[boot]
root_volume = "data"
boot_dir = "/boot"
esp = "/boot/efi"
TOML
/usr/libexec/snapbackd init
systemctl enable snapbackd.service
mkdir -p /boot/efi
mount -t tmpfs -o size=16m esp /boot/efi
mkdir -p /boot/efi/loader/entries /boot/efi/probe/6.0
echo "kernel image 6.0" > /boot/vmlinuz-6.0-probe
echo "kernel image 6.0 on the ESP" > /boot/efi/probe/6.0/linux
printf 'timeout 0\ndefault probe-6.0.conf\n' > /boot/efi/loader/loader.conf
printf 'title Probe 6.0\nversion 6.0\nlinux /probe/6.0/linux\noptions root=/dev/mapper/snapback-data ro\n' \
  > /boot/efi/loader/entries/probe-6.0.conf
