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
