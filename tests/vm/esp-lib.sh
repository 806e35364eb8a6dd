# shellcheck shell=bash
# Host-side helpers for scenarios that boot through UEFI firmware (file `firmware` = `uefi`):
# OVMF runs systemd-boot from an EFI System Partition, which reads Boot Loader Specification
# entries and starts a kernel with the entry's command line and initrds.
#
# The ESP lives on a disk image, work/SCENARIO/esp.img: GPT, one partition (1 MiB in, type
# "EFI System"), FAT32. Everything here works on the image file with mtools: the build machine's
# kernel need not be able to mount vfat, and no loop device is needed. Paths are ESP paths,
# `/loader/loader.conf`. Sourced by tests/vm/boot and by scenarios' host steps:
#     . "$VM_SCENARIO/../../esp-lib.sh"
# Every helper takes the image from $ESP_IMAGE, which defaults to $VM_WORK/esp.img.
#
# Layout the harness keeps (what `esp_create`, `esp_install_kernel`, `esp_entry` and
# tests/vm/boot write):
#   /EFI/BOOT/BOOTX64.EFI, /EFI/systemd/systemd-bootx64.efi   systemd-boot (Debian's systemd-boot-efi)
#   /loader/loader.conf                                       `timeout 0`, `editor no`, `default …`
#   /loader/entries/ID.conf                                   one per entry
#   /$VM_MACHINE_ID/KVER/linux                                a kernel, kernel-install's layout
#   /$VM_MACHINE_ID/KVER/vm-modules.img                       the harness's modules for KVER (cpio)
#   /vm/initramfs.img, /vm/boot.img                           the harness image and this boot's
#                                                             scenario files (rewritten by `boot`
#                                                             before every boot)

# vm_copy_modules (esp_install_kernel) and die come from host-lib.sh
declare -F vm_copy_modules >/dev/null || . "$(dirname "${BASH_SOURCE[0]}")/host-lib.sh"

VM_ESP_START=2048                       # first sector of the partition
VM_ESP_OFFSET=$((VM_ESP_START * 512))
VM_MACHINE_ID=0123456789abcdef0123456789abcdef   # the harness image's /etc/machine-id
# What every entry's `options` needs for the harness: the serial console it parses, and a panic
# that ends the VM (qemu runs with -no-reboot) instead of hanging until the timeout.
VM_UEFI_OPTIONS="console=ttyS0 panic=-1 quiet"
OVMF_CODE="${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}"
OVMF_VARS="${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}"
SDBOOT_EFI="${SDBOOT_EFI:-/usr/lib/systemd/boot/efi/systemd-bootx64.efi}"
# mtools refuses FAT geometries it did not expect from a floppy-era BIOS table otherwise
export MTOOLS_SKIP_CHECK=1

esp_die() { echo "VM HARNESS ERROR (ESP): $*" >&2; exit 2; }

require_uefi_tools() {
  local f
  for f in "$OVMF_CODE" "$OVMF_VARS"; do [ -r "$f" ] || esp_die "$f missing (apt-get install ovmf)"; done
  [ -r "$SDBOOT_EFI" ] || esp_die "$SDBOOT_EFI missing (apt-get install systemd-boot-efi)"
  command -v mcopy >/dev/null || esp_die "mcopy missing (apt-get install mtools)"
  command -v mkfs.vfat >/dev/null || esp_die "mkfs.vfat missing (apt-get install dosfstools)"
  command -v sfdisk >/dev/null || esp_die "sfdisk missing (apt-get install fdisk)"
}

_esp() { echo "${ESP_IMAGE:-${VM_WORK:?VM_WORK or ESP_IMAGE must be set}/esp.img}@@$VM_ESP_OFFSET"; }

# esp_create IMAGE [SIZE_MIB] : a fresh disk image with an empty ESP, systemd-boot installed as
# the removable-media default (OVMF starts it with no boot variables set) and a loader.conf
# that boots the default entry at once (timeout 0: nobody is at the menu).
esp_create() {
  local img="$1" mib="${2:-256}" part sectors
  require_uefi_tools
  rm -f "$img"; truncate -s "${mib}M" "$img"
  printf 'label: gpt\nstart=%s, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"\n' \
    "$VM_ESP_START" | sfdisk -q "$img" || esp_die "sfdisk failed on $img"
  sectors="$(sfdisk -d "$img" | sed -n -E 's/.*start= *'"$VM_ESP_START"', size= *([0-9]+).*/\1/p')"
  [ -n "$sectors" ] || esp_die "no partition in $img after sfdisk"
  part="$(mktemp "$img.part.XXXXXX")"
  truncate -s $((sectors * 512)) "$part"
  mkfs.vfat -F 32 -n ESP "$part" >/dev/null || { rm -f "$part"; esp_die "mkfs.vfat failed"; }
  dd if="$part" of="$img" bs=1M seek=$((VM_ESP_OFFSET / 1048576)) conv=notrunc,sparse status=none
  rm -f "$part"
  ESP_IMAGE="$img" esp_put "$SDBOOT_EFI" /EFI/BOOT/BOOTX64.EFI
  ESP_IMAGE="$img" esp_put "$SDBOOT_EFI" /EFI/systemd/systemd-bootx64.efi
  printf 'timeout 0\neditor no\n' | ESP_IMAGE="$img" esp_write /loader/loader.conf
  ESP_IMAGE="$img" esp_mkdir /loader/entries
}

# esp_mkdir PATH : like mkdir -p
esp_mkdir() {
  local p="" part
  for part in $(echo "$1" | tr '/' ' '); do
    p="$p/$part"
    mdir -i "$(_esp)" -b "::$p" >/dev/null 2>&1 || mmd -i "$(_esp)" "::$p" || esp_die "mmd $p failed"
  done
}

# esp_put SRC PATH : copies a host file onto the ESP (parents made, an old file replaced)
esp_put() {
  esp_mkdir "$(dirname "$2")"
  mcopy -o -i "$(_esp)" "$1" "::$2" || esp_die "mcopy $1 -> $2 failed"
}

# esp_write PATH : stdin becomes the ESP file PATH
esp_write() {
  local tmp; tmp="$(mktemp)"
  cat > "$tmp"; esp_put "$tmp" "$1"; rm -f "$tmp"
}

# esp_cat PATH : the file's bytes on stdout; fails when it does not exist
esp_cat() { mcopy -n -i "$(_esp)" "::$1" - 2>/dev/null; }

# esp_exists PATH
esp_exists() { mdir -i "$(_esp)" -b "::$1" >/dev/null 2>&1; }

# esp_ls DIR : the names in DIR, one a line, sorted (no . and ..; mdir -b ends a directory's
# name with a slash, dropped here)
esp_ls() {
  mdir -i "$(_esp)" -b "::$1" 2>/dev/null | sed -e 's|/$||' -e 's|.*/||' -e '/^\.\{1,2\}$/d' | sort
}

# esp_rm PATH : deletes a file (not an error when it is not there)
esp_rm() { ! esp_exists "$1" || mdel -i "$(_esp)" "::$1" || esp_die "mdel $1 failed"; }

# esp_get PATH DEST : copies an ESP file to the host
esp_get() { mcopy -n -o -i "$(_esp)" "::$1" "$2"; }

# esp_install_kernel KVER : /boot/vmlinuz-KVER as /$VM_MACHINE_ID/KVER/linux, and next to it
# vm-modules.img, the harness's kernel modules built for KVER (the harness image carries those of
# the newest cloud kernel only; this cpio, loaded after it, replaces them). Prints nothing.
esp_install_kernel() {
  local kver="$1" dir
  [ -r "/boot/vmlinuz-$kver" ] || esp_die "/boot/vmlinuz-$kver missing (apt-get install linux-image-$kver)"
  [ -d "/lib/modules/$kver" ] || esp_die "/lib/modules/$kver missing"
  esp_put "/boot/vmlinuz-$kver" "/$VM_MACHINE_ID/$kver/linux"
  dir="$(mktemp -d)"
  mkdir -p "$dir/modules"
  vm_copy_modules "$kver" "$dir/modules" || { rm -rf "$dir"; esp_die "modules for $kver"; }
  (cd "$dir" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$dir.cpio.gz"
  esp_put "$dir.cpio.gz" "/$VM_MACHINE_ID/$kver/vm-modules.img"
  rm -rf "$dir" "$dir.cpio.gz"
}

# esp_entry ID KVER TITLE [OPTIONS...] : writes /loader/entries/ID.conf booting KVER (installed by
# esp_install_kernel) with the harness's initrds and VM_UEFI_OPTIONS plus OPTIONS
esp_entry() {
  local id="$1" kver="$2" title="$3"; shift 3
  esp_entry_text "$kver" "$title" "$@" | esp_write "/loader/entries/$id.conf"
}

# esp_entry_text KVER TITLE [OPTIONS...] : the text of such an entry (a guest-side script writes
# the same lines; see scenarios/uefi-boot)
esp_entry_text() {
  local kver="$1" title="$2"; shift 2
  printf 'title %s\nversion %s\nmachine-id %s\nlinux /%s/%s/linux\n' \
    "$title" "$kver" "$VM_MACHINE_ID" "$VM_MACHINE_ID" "$kver"
  printf 'initrd /vm/initramfs.img\ninitrd /%s/%s/vm-modules.img\ninitrd /vm/boot.img\n' \
    "$VM_MACHINE_ID" "$kver"
  printf 'options %s%s\n' "$VM_UEFI_OPTIONS" "${*:+ $*}"
}

# esp_set_default ID : loader.conf's `default` becomes the entry /loader/entries/ID.conf (the
# person at the boot menu picking an entry, for every later boot; systemd-boot's own EFI variables
# LoaderEntryDefault/OneShot, when a guest set them, still win over it). systemd-boot 252 names
# an entry by its whole file name: `default ID` would match nothing, and it would boot whichever
# entry sorts first.
esp_set_default() {
  { esp_cat /loader/loader.conf | grep -v '^default[[:space:]]'; echo "default $1.conf"; } > "${TMPDIR:-/tmp}/loader.conf.$$"
  esp_write /loader/loader.conf < "${TMPDIR:-/tmp}/loader.conf.$$"
  rm -f "${TMPDIR:-/tmp}/loader.conf.$$"
}
