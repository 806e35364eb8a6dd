# Helpers for the snapbackd-kernel boots: the product as an administrator runs it, on the
# real kernel's device-mapper — snapbackd activate, snapbackd on a bus, busctl as the client.

. /snapback/snapbackd-lib.sh

# write_config [POOL-DEVICE] : the administrator's /etc/snapback/snapback.toml
write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "${1:-/dev/disk/pool}"

[[volume]]
name = "root"
device = "/dev/disk/root"
auto = true
cow_size = "48M"

[[volume]]
name = "var"
device = "/dev/disk/var"
auto = true
cow_size = "16M"
EOC
}

keep_save() { (cd /tmp/keep && tar -cf /dev/disk/keep .); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }

# tree DIR SEED : the pre-upgrade system: many files, a large file, symlinks, modes, owners
tree() {
  mkdir -p "$1/etc/conf.d" "$1/usr/lib/app" "$1/usr/bin" "$1/var/cache"
  i=0
  while [ $i -lt 200 ]; do
    echo "config $i of $2" > "$1/etc/conf.d/file$i.conf"; i=$((i + 1))
  done
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count=12 2>/dev/null
  head -c 70000 /dev/urandom > "$1/usr/bin/tool"
  chmod 4755 "$1/usr/bin/tool"; chmod 0600 "$1/etc/conf.d/file7.conf"
  chown 1000:1000 "$1/var/cache"
  ln -s ../lib/app/libbig.so "$1/usr/bin/libbig-link"
  ln -s /nonexistent/target "$1/etc/dangling"
}

# upgrade DIR MIB : what a package upgrade does: modify, add (MIB of new library), delete,
# chmod, relink
upgrade() {
  dd if=/dev/urandom of="$1/usr/lib/app/libbig.so" bs=1M count=3 seek=4 conv=notrunc 2>/dev/null
  echo "new setting" >> "$1/etc/conf.d/file3.conf"
  rm -f "$1/etc/conf.d/file10.conf" "$1/usr/bin/tool"
  dd if=/dev/urandom of="$1/usr/lib/app/libnew.so" bs=1M count="$2" 2>/dev/null
  mkdir -p "$1/usr/share/new"; echo hi > "$1/usr/share/new/readme"
  chmod 0644 "$1/etc/conf.d/file7.conf"
  rm "$1/usr/bin/libbig-link"; ln -s ../lib/app/libnew.so "$1/usr/bin/libbig-link"
  sync
}

# no_device REGEX / has_device REGEX : over `dmsetup ls`, failing if dmsetup itself fails
no_device() { _ls="$(dm ls)" || return 1; ! echo "$_ls" | grep -Eq "$1"; }
has_device() { _ls="$(dm ls)" || return 1; echo "$_ls" | grep -Eq "$1"; }
# not_suspended NAME : the device is live (a failed transition must never leave it suspended)
not_suspended() { dm info "$1" | grep -Eq 'State: +ACTIVE'; }
no_object() { ! busctl get-property $BUS "$1" $BUS.Snapshot State >/dev/null 2>&1; }

mount_vol() { mkdir -p "/mnt/$1"; mount -t ext4 "/dev/mapper/snapback-$1" "/mnt/$1"; }
target_of() { dm table "snapback-$1" | awk '{print $3}'; }
