# shellcheck shell=bash
# Host-side helpers of uefi-dracut-root's host steps (sourced after esp-lib.sh).

# The kernel command line of the machine's own entries: the harness's console and panic
# options first (VM_UEFI_OPTIONS), root on the snapback volume, and a dracut that powers the VM
# off instead of waiting at an emergency shell when it cannot mount root.
SYSTEM_OPTIONS="$VM_UEFI_OPTIONS root=/dev/mapper/snapback-root rootfstype=ext4 ro rd.retry=10 rd.shell=0 rd.emergency=poweroff"
SETUP_ENTRY_ID=vm-setup

ok() { echo "CHECK PASS $1"; }
ko() { echo "CHECK FAIL $1: $2"; }
# check_host NAME WANT GOT
check_host() { if [ "$2" = "$3" ]; then ok "$1"; else ko "$1" "expected '$2', got '$3'"; fi; }

# dracut_image KVER OUT : an initramfs built by Debian's dracut for KVER with snapback's module
# (systemd/dracut/90snapback) and the scenario's snapback.toml, from a copy of dracut's module
# tree with ours added (nothing is installed on the host); what a Fedora machine's
# kernel-install runs for a new kernel. Modules: the shell-based initramfs (no systemd in it),
# block root, udev; drivers for virtio disks. For speed under emulation: the daemon stripped of
# its symbol table too (as a package build strips it; 27 -> 19 MB in a debug build), no fsck
# tools (dracut's fsck of root costs ~2 s a boot, and the root is only read), zstd -3 (a third
# of the default level's build time for an image 12% larger).
dracut_image() {
  local kver="$1" out="$2" target snapbackd tmp listing f
  target="${CARGO_TARGET_DIR:-$REPO/target}"
  snapbackd="$target/debug/snapbackd"; [ -x "$snapbackd" ] || snapbackd="$target/release/snapbackd"
  [ -x "$snapbackd" ] || { ko "dracut-image-$kver" "no snapbackd built under $target"; return 1; }
  command -v dracut >/dev/null || { ko "dracut-image-$kver" "dracut missing (tools/install-deps)"; return 1; }
  tmp="$(mktemp -d)"
  cp -a /usr/lib/dracut "$tmp/dracut"
  cp -a "$REPO/systemd/dracut/90snapback" "$tmp/dracut/modules.d/"
  strip --strip-all -o "$tmp/snapbackd" "$snapbackd" 2>/dev/null || cp "$snapbackd" "$tmp/snapbackd"
  if ! SNAPBACKD="$tmp/snapbackd" SNAPBACK_CONFIG="$VM_SCENARIO/snapback.toml" dracutbasedir="$tmp/dracut" \
      dracut --force --no-hostonly --no-hostonly-cmdline --no-early-microcode --kver "$kver" \
        --modules "base rootfs-block udev-rules snapback" --add-drivers "virtio_pci virtio_blk" \
        --nofscks --compress "zstd -3 -q -T0" --tmpdir "$tmp" \
        "$out" > "$VM_WORK/dracut-$kver.log" 2>&1; then
    ko "dracut-image-$kver" "$(tail -n 3 "$VM_WORK/dracut-$kver.log" | tr '\n' ' ')"
    rm -rf "$tmp"; return 1
  fi
  rm -rf "$tmp"
  listing="$(lsinitrd "$out" 2>/dev/null || true)"
  for f in usr/bin/snapbackd etc/snapback/snapback.toml "usr/lib/modules/$kver/kernel/drivers/md/dm-snapshot.ko"; do
    if grep -q " $f\$" <<< "$listing"; then ok "dracut-image-$kver-has/$f"
    else ko "dracut-image-$kver-has/$f" "not in $out"; fi
  done
  grep -q 'initqueue/settled/50-snapback-activate.sh$' <<< "$listing" &&
    ok "dracut-image-$kver-has-activate-hook" || ko "dracut-image-$kver-has-activate-hook" "not in $out"
}

# system_entry_text KVER : the BLS entry kernel-install writes for KVER (kernel and dracut
# initramfs in the machine-id directory)
system_entry_text() {
  printf 'title Debian GNU/Linux (%s)\nversion %s\nmachine-id %s\nlinux /%s/%s/linux\ninitrd /%s/%s/initrd\noptions %s\n' \
    "$1" "$1" "$VM_MACHINE_ID" "$VM_MACHINE_ID" "$1" "$VM_MACHINE_ID" "$1" "$SYSTEM_OPTIONS"
}

# setup_entry : the entry of the harness boots (the harness initramfs with this boot's script on
# the newest kernel, whose modules the harness image carries), made the default; the person at
# the menu picking "the test harness" for the next boot
setup_entry() {
  local kver; kver="$(vm_kernel_version)"
  esp_exists /vm/linux || esp_put "/boot/vmlinuz-$kver" /vm/linux
  printf 'title VM test harness\nversion %s\nlinux /vm/linux\ninitrd /vm/initramfs.img\ninitrd /vm/boot.img\noptions %s\n' \
    "$kver" "$VM_UEFI_OPTIONS" | esp_write "/loader/entries/$SETUP_ENTRY_ID.conf"
  esp_set_default "$SETUP_ENTRY_ID"
}

# esp_state : what boot_state (lib.sh) prints in the guest, read from the image: "sha256  path"
# of loader.conf, the entries but snapback's own, and the files of the kernel directories
esp_state() {
  local f
  mdir -i "$(_esp)" -/ -b ::/loader "::/$VM_MACHINE_ID" | sed -n 's|^::/||p' | grep -v '/$' |
    grep -v '^loader/entries/snapback-' | LC_ALL=C sort | while read -r f; do
    echo "$(esp_cat "/$f" | sha256sum | cut -c1-64)  $f"
  done
}

# esp_default : loader.conf's default line
esp_default() { esp_cat /loader/loader.conf | grep '^default' || true; }

# console_order N NAME FIRST SECOND : a check that line FIRST (a fixed string) appears on boot
# N's serial console before the first line containing SECOND
console_order() {
  local log="$VM_WORK/boot$1.log" a b
  a="$(tr -d '\r' < "$log" | grep -n -F -m1 -- "$3" | cut -d: -f1)"
  b="$(tr -d '\r' < "$log" | grep -n -F -m1 -- "$4" | cut -d: -f1)"
  if [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]; then ok "$2"
  else ko "$2" "'$3' (line ${a:-none}) not before '$4' (line ${b:-none}) in $log"; fi
}

# boot_figures N... : the host-measured times of boots N (qemu's start to the guest's first init
# line, and to the end), as figures
boot_figures() {
  local n kind
  for n in "$@"; do
    for kind in init wall; do
      [ -f "$VM_WORK/boot$n.$kind-ms" ] && echo "FIGURE boot$n-$kind $(cat "$VM_WORK/boot$n.$kind-ms") ms"
    done
  done
  return 0
}
