# Helpers for the boot-rollback boots. The root volume is a data disk with ext4 mounted at
# /mnt/root (the stand-in for "/"): the boot script runs in the harness's initramfs, before
# anything is mounted, and runs `snapbackd activate --cmdline /proc/cmdline` itself, as the
# dracut module would. The ESP is mounted at /boot (systemd-boot's layout: /boot is the ESP).
. /snapback/snapbackd-lib.sh
. /snapback/uefi-lib.sh
. /in/kernels          # old= new= (kernel versions), mid= (machine id)
CONF=/etc/snapback/snapback.toml

write_config() {
  mkdir -p /etc/snapback
  cat > $CONF <<EOC
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "root"
device = "/dev/disk/root"
auto = true
cow_size = "48M"

[boot]
root_volume = "root"
boot_dir = "/boot"
esp = "/boot"
EOC
}

# (fsync'd by dd: boot 5 cuts the power right after, and a global sync would wait for the ESP)
keep_save() { (cd /tmp/keep && tar -cf - . | dd of=/dev/disk/keep bs=64k conv=fsync 2>/dev/null); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }
mount_root() { mkdir -p /mnt/root; mount -t ext4 /dev/mapper/snapback-root /mnt/root; }
mount_boot() { esp_mount /boot; }
target_of() { dm table "snapback-$1" | awk '{print $3}'; }

# boot_state : the managed files of the ESP as "sha256  path", sorted: entries (snapback's own
# excluded), loader.conf's default, every kernel directory (the harness's /vm/ images are
# rewritten by the host before every boot and are not compared)
boot_state() {
  (cd /boot && find loader "$mid" -type f ! -name 'snapback-*' | sort | while read -r p; do
    echo "$(sha256sum < "$p" | cut -c1-64)  $p"; done)
}

# the system's files: a small tree of the "/" volume
tree() {
  mkdir -p "$1/etc" "$1/usr/lib/modules/$old" "$1/usr/bin"
  i=0; while [ $i -lt 50 ]; do echo "config $i" > "$1/etc/file$i.conf"; i=$((i + 1)); done
  echo "modules of $old" > "$1/usr/lib/modules/$old/modules.dep"
  head -c 300000 /dev/urandom > "$1/usr/bin/init"
}

# upgrade_root : what the package upgrade does to "/": the new kernel's modules in, the old
# ones out, a library replaced, a file changed
upgrade_root() {
  mkdir -p "$1/usr/lib/modules/$new"; echo "modules of $new" > "$1/usr/lib/modules/$new/modules.dep"
  rm -rf "${1:?}/usr/lib/modules/$old"
  head -c 200000 /dev/urandom > "$1/usr/bin/init"
  echo changed >> "$1/etc/file3.conf"
}

# upgrade_boot : what the kernel package does to the ESP (kernel-install's layout): the new
# kernel (staged by the host under /stage/, a directory no entry boots) and its entry in,
# made the default, then the old kernel's entry and files removed
upgrade_boot() {
  mkdir -p "/boot/$mid/$new"
  cp /boot/stage/linux "/boot/$mid/$new/linux"
  cp /boot/stage/vm-modules.img "/boot/$mid/$new/vm-modules.img"
  cp /in/new.conf "/boot/loader/entries/$mid-$new.conf"
  sed -i "s/^default .*/default $mid-$new.conf/" /boot/loader/loader.conf
  rm -f "/boot/loader/entries/$mid-$old.conf"
  rm -rf "/boot/$mid/$old"
  sync
}

# call METHOD SIGNATURE ARGS... : a Manager method; recording the boot files of a set (tens of
# MiB through the emulated disks) takes longer than busctl's default 25 s
call() { _m="$1"; shift; busctl --timeout=600 call $BUS $MGR $BUS.Manager "$_m" "$@"; }

# entry_field FILE KEY : the first value of KEY in a BLS entry
entry_field() { sed -n "s/^$2 //p" "$1" | head -n1; }

# pool_used : the pool's used bytes, from the Status() reply
pool_used() {
  busctl call $BUS $MGR $BUS.Manager Status | tr ' ' '\n' | grep -A2 -x '"used"' | tail -n1
}

# wait_daemon SECONDS : owns_name with a longer bound: a start that finishes a /boot restore
# (files written from the pool, checksummed) serves the bus only afterwards, which takes more
# than owns_name's minute with a debug build under TCG
wait_daemon() {
  _n=0
  while ! busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
      GetConnectionUnixProcessID s $BUS 2>/dev/null | grep -qx "u $DAEMON_PID"; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "snapbackd exited"; tail -n 20 /tmp/snapbackd.log; return 1; }
    sleep 0.5; _n=$((_n + 1))
    [ $_n -lt $(($1 * 2)) ] || { echo "snapbackd did not take its name"; tail -n 20 /tmp/snapbackd.log; return 1; }
  done
}
