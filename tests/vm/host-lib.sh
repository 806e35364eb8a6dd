# Shared host-side helpers for build-initramfs, boot and run-all (sourced, not executed).

die() { echo "VM HARNESS ERROR: $*" >&2; exit 2; }

# The Debian cloud kernel to boot: $VM_KERNEL_VERSION or the newest installed one.
vm_kernel_version() {
  if [ -n "${VM_KERNEL_VERSION:-}" ]; then echo "$VM_KERNEL_VERSION"; return; fi
  local v
  v="$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V | tail -n1)"
  [ -n "$v" ] || die "no /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64"
  echo "$v"
}

# Everything a boot needs on the host; fails loudly, never skips.
require_vm_tools() {
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
  command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"
  [ -r "/boot/vmlinuz-$(vm_kernel_version)" ] || die "kernel image /boot/vmlinuz-$(vm_kernel_version) unreadable"
}

# pattern_sectors COUNT TAG : COUNT 512-byte sectors, each one different ("TAG sector N" lines),
# so a chunk copied to the wrong place never goes unnoticed; compresses well.
pattern_sectors() {
  awk -v n="$1" -v tag="$2" 'BEGIN {
    for (s = 0; s < n; s++) {
      line = sprintf("%s sector %08d\n", tag, s); out = ""
      while (length(out) + length(line) <= 511) out = out line
      while (length(out) < 511) out = out "."
      printf "%s\n", out
    } }'
}

# patch_image IMAGE SECTOR FILE : writes FILE into IMAGE at SECTOR, size unchanged (the model
# the VM's results are compared with)
patch_image() { dd if="$3" of="$1" bs=512 seek="$2" conv=notrunc status=none; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
