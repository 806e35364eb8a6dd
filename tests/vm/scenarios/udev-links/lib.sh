# Helpers for the udev-links boots. The volume's ext4 gets a fixed UUID and label, so boot 2's
# prepare.sh can put it into /etc/fstab before anything has read the disk.
FS_UUID=5a3c0f2e-7d41-4b8e-9c6a-2f1e0d3b4a59
FS_LABEL=snapdata
ORIGIN=/dev/mapper/snapback-data
# the devices of the volume's stack nobody mounts: they must not be scanned nor linked
HIDDEN="snapback-data-real snapback-data-1-cow snapback-data-1"

# dev_name PATH : what PATH resolves to, by name: the dm name, or the kernel's (vdb) for a
# disk; "missing" when the path does not exist
dev_name() {
  [ -e "$1" ] || { echo missing; return; }
  _mm="$(majmin "$1")"
  if [ -f "/sys/dev/block/$_mm/dm/name" ]; then cat "/sys/dev/block/$_mm/dm/name"
  else basename "$(readlink -f "/sys/dev/block/$_mm")"; fi
}

# dm_mm DM-NAME : major:minor of a dm device, from the kernel (not from a /dev path)
dm_mm() { dmsetup info -c --noheadings -o major,minor --separator : "$1"; }
# props DM-NAME : its udev properties (udev's database entry for dm-N)
props() { udevadm info -q property -n "/dev/$(basename "$(readlink -f "/sys/dev/block/$(dm_mm "$1")")")"; }

# mounted_dev DIR : major:minor of what is mounted on DIR (from the kernel's mount table)
mounted_dev() { awk -v d="$1" '$5 == d {print $3}' /proc/self/mountinfo | tail -n1; }

# links_name_origin TAG : /dev/disk/by-uuid and by-label name the volume users mount, and
# mount UUID=… / LABEL=… mount it
links_name_origin() {
  check_eq "$1/by-uuid-names-origin" snapback-data "$(dev_name "/dev/disk/by-uuid/$FS_UUID")"
  check_eq "$1/by-label-names-origin" snapback-data "$(dev_name "/dev/disk/by-label/$FS_LABEL")"
  echo "VM-INFO: $1: by-uuid -> $(readlink "/dev/disk/by-uuid/$FS_UUID") ($(dev_name "/dev/disk/by-uuid/$FS_UUID")), by-label -> $(readlink "/dev/disk/by-label/$FS_LABEL") ($(dev_name "/dev/disk/by-label/$FS_LABEL")), $ORIGIN = $(readlink -f "$ORIGIN") $(majmin "$ORIGIN")"
  mount_names_origin "$1/mount-by-uuid-mounts-origin" "UUID=$FS_UUID"
  mount_names_origin "$1/mount-by-label-mounts-origin" "LABEL=$FS_LABEL"
}

# mount_names_origin NAME SPEC : mount SPEC mounts the origin. /bin/mount is util-linux's, as
# systemd and users run it (libblkid resolves UUID=/LABEL= through the /dev/disk links); a bare
# `mount` in this busybox shell is busybox's applet, which scans every device itself and takes
# whichever carries the UUID first.
mount_names_origin() {
  mkdir -p /mnt/probe
  _rc=0; /bin/mount "$2" /mnt/probe 2>/tmp/mount.err || _rc=$?
  [ "$_rc" = 0 ] || echo "VM-INFO: mount $2: $(cat /tmp/mount.err)"
  check_eq "$1" "rc=0 on $(majmin "$ORIGIN")" "rc=$_rc on $(mounted_dev /mnt/probe)"
  [ "$_rc" != 0 ] || umount /mnt/probe
}

# hidden_unscanned TAG : -real, -cow and the snapshot: udev's disk rules skipped (no blkid:
# no ID_FS_*), other rules told to keep off, and no /dev/disk link of any kind names them
hidden_unscanned() {
  for d in $HIDDEN; do
    p="$(props "$d")"
    check_eq "$1/$d-flags" "DM_UDEV_DISABLE_DISK_RULES_FLAG=1 DM_UDEV_DISABLE_OTHER_RULES_FLAG=1" \
      "$(echo "$p" | grep -E '^DM_UDEV_DISABLE_(DISK|OTHER)_RULES_FLAG=' | sort | tr '\n' ' ' | sed 's/ $//')"
    check_eq "$1/$d-not-probed" "" "$(echo "$p" | grep '^ID_FS_' | tr '\n' ' ')"
    mm="$(dm_mm "$d")"
    check_eq "$1/$d-no-disk-links" "" "$(for l in /dev/disk/by-*/*; do [ "$(majmin "$l")" = "$mm" ] && echo "$l"; done | tr '\n' ' ')"
  done
  # 61-snapback.rules (installed by tools/install) in force: the origin's links outrank the disk's
  check_eq "$1/origin-link-priority" "L: 10" \
    "$(udevadm info -n "/dev/$(basename "$(readlink -f "/sys/dev/block/$(dm_mm snapback-data)")")" | grep '^L:')"
  p="$(props snapback-data)"
  check_eq "$1/origin-probed" "ID_FS_LABEL=$FS_LABEL ID_FS_UUID=$FS_UUID" \
    "$(echo "$p" | grep -E '^ID_FS_(UUID|LABEL)=' | sort | tr '\n' ' ' | sed 's/ $//')"
}

# disk_event TAG : an event on the disk under the volume alone (as its inotify watch, a
# partitioning tool or `udevadm trigger` on it cause): udev probes the disk again, last
disk_event() {
  # the disk's own page cache may still hold what udev read from it before the volume's ext4
  # was written (through dm, below that cache): drop it, or blkid sees the stale empty disk
  sync; echo 3 > /proc/sys/vm/drop_caches
  udevadm trigger --action=change "/sys/class/block/$(basename "$(readlink -f /dev/disk/data)")"
  udevadm settle --timeout=60
  check_eq "$1/disk-probed" "ID_FS_LABEL=$FS_LABEL ID_FS_UUID=$FS_UUID" \
    "$(udevadm info -q property -n /dev/disk/data | grep -E '^ID_FS_(UUID|LABEL)=' | sort | tr '\n' ' ' | sed 's/ $//')"
  links_name_origin "$1"
}

# coldplug TAG ACTION : what `udevadm trigger` at boot (add) or by hand (change) does to every
# block device at once — the disk under the volume included — then the same checks
coldplug() {
  udevadm trigger --action="$2" --subsystem-match=block
  udevadm settle --timeout=60
  links_name_origin "$1"
  hidden_unscanned "$1"
}
