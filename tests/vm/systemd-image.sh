# shellcheck shell=bash
# Sourced by build-initramfs --systemd after the ordinary image is packed: turns the same staging
# root ($root) into work/initramfs-systemd.cpio.gz, for scenarios whose `init` file says
# `systemd`. guest/init then does its usual setup and `exec`s Debian's systemd 252 as PID 1; the
# root file system is the initramfs itself (no /etc/initrd-release, so systemd treats it as the
# real root). What is in it, and why:
#
# - systemd, systemctl, journalctl, systemd-journald (the daemon logs to the journal and the
#   checks read it by MESSAGE_ID), systemd-shutdown (a clean poweroff ends the boot).
# - systemd-udevd + udevadm with the block and device-mapper udev rules (Debian's dmsetup
#   package's 55-dm.rules / 60-persistent-storage-dm.rules / 95-dm-notify.rules and systemd's
#   99-systemd.rules): without udev no .device unit ever appears, so an fstab entry for
#   /dev/mapper/snapback-<volume> would wait 90 s and fail — udev is part of what is tested.
# - the fstab generator (boot 2 mounts a volume from /etc/fstab) and util-linux mount/umount
#   (systemd runs /bin/mount for .mount units; busybox's is replaced in this image only), and
#   util-linux losetup/blockdev/fsfreeze, which the userspace backend runs.
# - dbus-daemon as Debian runs it (dbus.socket + dbus.service, full system.conf, user
#   messagebus, --systemd-activation), so org.snapback.Snapback1's activation file and
#   SystemdService= are what start the daemon.
# - polkitd (polkit.service, bus-activated, user polkitd): the daemon asks it about every
#   mutating call, as installed (no --no-polkit).
# - Debian's own unit files for all of these (not hand-written ones), and only the .wants links
#   of units that are here; the default target is multi-user.target.
# - the product exactly as a user gets it: `tools/install --destdir ROOT --no-build` from the
#   same build the ordinary image uses (units in /usr/lib/systemd/system, the daemon in
#   /usr/libexec, bus policy and activation file in /usr/share/dbus-1, polkit actions, …).
#   The ordinary image's own copies (/usr/bin/snapbackd, the harness's dbus-system.conf and its
#   copy of the bus policy) are removed first, so nothing but the installed files can be used.
# - the harness: guest/systemd/vm-scenario.service (enabled for multi-user.target) runs
#   guest/systemd-scenario, which runs the boot script and powers the machine off;
#   guest/systemd/systemd-lib.sh is the boot scripts' shared helpers (/snapback/systemd-lib.sh).

# shellcheck disable=SC2154 # root, repo, here, work, daemon_dir, copy_with_libs: build-initramfs
build_systemd_image() {
  local f u units wants link target_unit
  [ -n "$daemon_dir" ] || die "the systemd image installs the product with tools/install: build snapbackd first"
  [ -x /lib/systemd/systemd ] || die "systemd missing (apt-get install systemd)"
  [ -x /bin/udevadm ] || die "udevadm missing (apt-get install udev)"
  [ -x /usr/lib/polkit-1/polkitd ] || die "polkitd missing (apt-get install polkitd)"

  # 1. nothing of the product but what tools/install puts there
  rm -f "$root/usr/bin/snapbackd" "$root/usr/bin/snapbackctl" "$root/etc/dbus-system.conf"
  rm -rf "$root/etc/dbus-1/system.d"

  # 2. systemd and its tools (paths as Debian's units name them)
  for f in /lib/systemd/systemd /lib/systemd/systemd-journald /lib/systemd/systemd-shutdown \
           /lib/systemd/system-generators/systemd-fstab-generator \
           /bin/systemctl /bin/journalctl /bin/udevadm; do
    rm -f "$root$f"; copy_with_libs "$f" "$f"
  done
  ln -sf /bin/udevadm "$root/lib/systemd/systemd-udevd"   # as in Debian: one binary
  for f in /bin/mount /bin/umount; do rm -f "$root$f"; copy_with_libs "$f" "$f"; done
  # the userspace backend runs util-linux's losetup (--find --show --nooverlap), blockdev and
  # fsfreeze as child processes; busybox's losetup knows none of those options. /usr/sbin
  # comes before busybox's /bin in every PATH here (systemd's default for services too).
  for f in losetup blockdev fsfreeze; do copy_with_libs "$(command -v "$f")" "/usr/sbin/$f"; done
  [ -e "$root/sbin/dmsetup" ] || ln -s /usr/sbin/dmsetup "$root/sbin/dmsetup"  # the dm rules call /sbin/dmsetup
  mkdir -p "$root/lib/udev/rules.d"
  for f in 50-udev-default.rules 55-dm.rules 60-block.rules 60-persistent-storage.rules \
           60-persistent-storage-dm.rules 95-dm-notify.rules 99-systemd.rules; do
    [ -f "/lib/udev/rules.d/$f" ] || die "udev rule $f missing (apt-get install udev dmsetup)"
    install -m 0644 "/lib/udev/rules.d/$f" "$root/lib/udev/rules.d/$f"
  done

  # dbus-daemon as Debian's dbus.service runs it
  install -D -m 0644 /usr/share/dbus-1/system.conf "$root/usr/share/dbus-1/system.conf"
  for f in system.d/org.freedesktop.systemd1.conf system.d/org.freedesktop.PolicyKit1.conf \
           system-services/org.freedesktop.PolicyKit1.service; do
    install -D -m 0644 "/usr/share/dbus-1/$f" "$root/usr/share/dbus-1/$f"
  done
  mkdir -p "$root/etc/dbus-1/system.d"
  # polkitd, its own actions and default rules
  copy_with_libs /usr/lib/polkit-1/polkitd /usr/lib/polkit-1/polkitd
  install -D -m 0644 /usr/share/polkit-1/actions/org.freedesktop.policykit.policy \
    "$root/usr/share/polkit-1/actions/org.freedesktop.policykit.policy"
  install -D -m 0644 /usr/share/polkit-1/rules.d/50-default.rules \
    "$root/usr/share/polkit-1/rules.d/50-default.rules"
  mkdir -p "$root/etc/polkit-1/rules.d" "$root/var/lib/polkit-1"

  # Debian's unit files for the services above, and the targets a boot goes through
  units=(sysinit.target basic.target local-fs-pre.target local-fs.target swap.target
         sockets.target timers.target paths.target slices.target multi-user.target
         emergency.target shutdown.target umount.target final.target poweroff.target
         systemd-poweroff.service
         systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket
         systemd-journald-audit.socket
         systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
         systemd-udev-trigger.service
         dbus.service dbus.socket polkit.service)
  mkdir -p "$root/lib/systemd/system"
  for u in "${units[@]}"; do
    [ -f "/lib/systemd/system/$u" ] || die "unit $u missing on this machine"
    install -m 0644 "/lib/systemd/system/$u" "$root/lib/systemd/system/$u"
  done
  for wants in /lib/systemd/system/*.target.wants; do
    for link in "$wants"/*; do
      target_unit="$(basename "$link")"
      [ -f "$root/lib/systemd/system/$target_unit" ] || continue
      mkdir -p "$root/lib/systemd/system/$(basename "$wants")"
      ln -sf "../$target_unit" "$root/lib/systemd/system/$(basename "$wants")/$target_unit"
    done
  done
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"

  # users and groups the units and udev rules name; os-release; an (empty) fstab
  cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
messagebus:x:100:101::/nonexistent:/bin/false
polkitd:x:996:996:polkit:/nonexistent:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat > "$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
disk:x:6:
kmem:x:15:
dialout:x:20:
cdrom:x:24:
tape:x:26:
audio:x:29:
video:x:44:
messagebus:x:101:
input:x:102:
kvm:x:103:
render:x:104:
sgx:x:105:
systemd-journal:x:999:
polkitd:x:996:
nogroup:x:65534:
EOF
  install -D -m 0644 /usr/lib/os-release "$root/usr/lib/os-release"
  ln -sf ../usr/lib/os-release "$root/etc/os-release"
  : > "$root/etc/fstab"
  mkdir -p "$root/root" "$root/var/tmp" "$root/var/log" "$root/usr/share/dbus-1/system-services"

  # 3. the product, as `tools/install` installs it (debug info stripped, as the ordinary image does)
  "$repo/tools/install" --destdir "$root" --no-build --bin-dir "$daemon_dir" >/dev/null
  if command -v strip >/dev/null; then
    strip --strip-debug "$root/usr/libexec/snapbackd" "$root/usr/bin/snapbackctl"
  fi

  # 4. the harness: the scenario runs as a service once the system is up
  install -m 0644 "$here/guest/systemd/vm-scenario.service" "$root/etc/systemd/system/vm-scenario.service"
  ln -sf ../vm-scenario.service "$root/etc/systemd/system/multi-user.target.wants/vm-scenario.service"
  install -m 0755 "$here/guest/systemd/systemd-scenario" "$root/snapback/systemd-scenario"
  install -m 0644 "$here/guest/systemd/systemd-lib.sh" "$root/snapback/systemd-lib.sh"

  (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$root.cpio.gz"
  mv "$root.cpio.gz" "$work/initramfs-systemd.cpio.gz"
  echo "build-initramfs: $work/initramfs-systemd.cpio.gz ($(du -h "$work/initramfs-systemd.cpio.gz" | cut -f1), systemd $(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p'))"
}
