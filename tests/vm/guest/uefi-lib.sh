# Helpers for boot scripts of UEFI scenarios (file `firmware` = `uefi`): the ESP the firmware
# booted from and systemd-boot's EFI variables. Source it: `. /snapback/uefi-lib.sh`. The
# scenario's `modules` file must name fat, vfat, nls_cp437, nls_ascii and efivarfs.

# The Boot Loader Interface's vendor GUID: systemd-boot's variables (LoaderInfo, ...) carry it.
LOADER_GUID=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
EFIVARS=/sys/firmware/efi/efivars

# esp_part : the ESP's partition device (partition 1 of /dev/disk/esp, the first disk)
esp_part() { echo "$(readlink -f /dev/disk/esp)1"; }

# esp_mount DIR : mounts the ESP read-write at DIR (waits for the partition node: the kernel
# reads the GPT after the disk appears)
esp_mount() {
  _n=0
  while [ ! -b "$(esp_part)" ] && [ $_n -lt 50 ]; do sleep 0.1; _n=$((_n + 1)); done
  mkdir -p "$1"
  mount -t vfat "$(esp_part)" "$1"
}

# efivars_mount : efivarfs at /sys/firmware/efi/efivars (there only when the firmware was UEFI)
efivars_mount() {
  [ -d /sys/firmware/efi ] || { echo "no /sys/firmware/efi: not booted through UEFI" >&2; return 1; }
  grep -q " $EFIVARS efivarfs " /proc/mounts || mount -t efivarfs efivarfs "$EFIVARS"
}

# loader_var NAME : the text of systemd-boot's variable NAME (e.g. LoaderEntrySelected). An EFI
# variable file is 4 attribute bytes, then the value: UTF-16LE text ending in a NUL character.
# Only ASCII is expected, so dropping the NUL bytes converts it.
loader_var() {
  [ -f "$EFIVARS/$1-$LOADER_GUID" ] || { echo "no EFI variable $1" >&2; return 1; }
  tail -c +5 "$EFIVARS/$1-$LOADER_GUID" | tr -d '\000'
}

# set_loader_var NAME TEXT : creates a systemd-boot variable as `bootctl` does (non-volatile,
# boot-service and runtime access: attributes 0x7), value UTF-16LE with a final NUL; e.g.
# LoaderEntryOneShot (the entry to boot next time only, deleted by systemd-boot when it reads
# it). Only a variable that does not exist yet: efivarfs makes existing ones immutable and the
# image has no chattr.
set_loader_var() {
  _f="$EFIVARS/$1-$LOADER_GUID"
  { printf '\007\000\000\000'; printf '%s' "$2" | sed 's/./&\n/g' | while IFS= read -r _c; do
      [ -n "$_c" ] && printf '%s\000' "$_c"; done; printf '\000\000'; } > /tmp/efivar.$$
  # efivarfs wants the whole variable in one write
  dd if=/tmp/efivar.$$ of="$_f" bs=4096 2>/dev/null
  _rc=$?; rm -f /tmp/efivar.$$; return $_rc
}
