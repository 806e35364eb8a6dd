# Helpers for the harness boots (1, 3, 5): the product run by hand in the harness initramfs, as
# an administrator (and dnf) would on the running system.
. /snapback/snapbackd-lib.sh
. /snapback/uefi-lib.sh
. /scenario/lib.sh
CONF=/etc/snapback/snapback.toml

write_config() { mkdir -p /etc/snapback; cp /scenario/snapback.toml $CONF; }
mount_root() { mkdir -p /mnt/root; mount -t ext4 /dev/mapper/snapback-root /mnt/root; }
mount_boot() { esp_mount /boot; }

# set_default ENTRY : loader.conf's default (the administrator's `bootctl set-default`)
set_default() { sed -i "s/^default .*/default $1/" /boot/loader/loader.conf; }

# as_installed : the ESP as the machine has it without the test harness: the host's entry for
# harness boots removed, the default the entry of the kernel installed last (KVER)
as_installed() {
  rm -f "/boot/loader/entries/$SETUP_ENTRY"
  set_default "$mid-$1.conf"
  sync
}

# make_system DIR : the small system on the root volume: busybox, its /sbin/init (the scenario's
# rootfs-init), dmsetup with its libraries (the init's checks read the root device's table),
# configuration, a library, the old kernel's modules (the few the init loads), and the mount
# points the system boots use
make_system() {
  r="$1"
  mkdir -p "$r/bin" "$r/sbin" "$r/etc/app" "$r/usr/lib/app" "$r/usr/lib/modules/$old"
  for d in proc sys dev run tmp boot scenario in out vmtest; do mkdir -p "$r/$d"; done
  cp /bin/busybox "$r/bin/busybox"
  cp /scenario/rootfs-init "$r/sbin/init"; chmod 0755 "$r/sbin/init"
  for f in /usr/sbin/dmsetup /lib64/ld-linux-x86-64.so.2 \
      $(/lib64/ld-linux-x86-64.so.2 --list /usr/sbin/dmsetup | sed -n 's/.* => \(\/[^ ]*\) .*/\1/p'); do
    mkdir -p "$r$(dirname "$f")"; cp -L "$f" "$r$f"
  done
  echo "release 1" > "$r/etc/release"; chmod 0640 "$r/etc/release"
  i=0; while [ $i -lt 30 ]; do echo "setting $i" > "$r/etc/app/conf$i"; i=$((i + 1)); done
  head -c 1000000 /dev/urandom > "$r/usr/lib/app/libapp.so.1"
  ln -s libapp.so.1 "$r/usr/lib/app/libapp.so"
  install_modules "$r" "$old"
}

# install_modules DIR KVER : the kernel's modules into the root at DIR (host-before put them in
# /in/modules/KVER, with the order the init loads them in)
install_modules() {
  mkdir -p "$1/usr/lib/modules/$2"
  cp /in/modules/"$2"/* "$1/usr/lib/modules/$2/"
  echo "modules of $2" > "$1/usr/lib/modules/$2/modules.dep"
}

# upgrade_root DIR : what the package upgrade does to "/": the new kernel's modules, a library
# replaced, configuration changed and removed, a marker
upgrade_root() {
  install_modules "$1" "$new"
  echo "release 2" > "$1/etc/release"
  rm "$1/etc/app/conf7"
  head -c 1500000 /dev/urandom > "$1/usr/lib/app/libapp.so.2"
  ln -sf libapp.so.2 "$1/usr/lib/app/libapp.so"
  echo upgraded > "$1/UPGRADED"
}

# upgrade_boot [remove-old] : what the kernel package does to the ESP (kernel-install's layout):
# the new kernel and its dracut initramfs (staged by the host under /stage/, a directory no
# entry boots) and its entry in, made the default; with remove-old, the old kernel's entry and
# files go too
upgrade_boot() {
  mkdir -p "/boot/$mid/$new"
  cp /boot/stage/linux "/boot/$mid/$new/linux"
  cp /boot/stage/initrd "/boot/$mid/$new/initrd"
  cp /in/new.conf "/boot/loader/entries/$mid-$new.conf"
  set_default "$mid-$new.conf"
  if [ "${1:-}" = remove-old ]; then
    rm -f "/boot/loader/entries/$mid-$old.conf"
    rm -rf "/boot/$mid/$old"
  fi
  sync
}

# call METHOD SIGNATURE ARGS... : a Manager method; recording the boot files of a set (tens of
# MiB through the emulated disks) can take longer than busctl's default 25 s
call() { _m="$1"; shift; busctl --timeout=300 call $BUS $MGR $BUS.Manager "$_m" "$@"; }

# pool_used : the pool's used bytes, from the Status() reply
pool_used() {
  busctl call $BUS $MGR $BUS.Manager Status | tr ' ' '\n' | grep -A2 -x '"used"' | tail -n1
}

# wait_daemon SECONDS : owns_name with a longer bound, for a start that first puts the boot
# files of a rollback back (they are written from the pool and checksummed before the daemon
# serves the bus)
wait_daemon() {
  _n=0
  while ! busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
      GetConnectionUnixProcessID s $BUS 2>/dev/null | grep -qx "u $DAEMON_PID"; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "snapbackd exited"; tail -n 20 /tmp/snapbackd.log; return 1; }
    sleep 0.5; _n=$((_n + 1))
    [ $_n -lt $(($1 * 2)) ] || { echo "snapbackd did not take its name"; tail -n 20 /tmp/snapbackd.log; return 1; }
  done
}

# ms_since NS : milliseconds from a now_ns reading to now
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }
