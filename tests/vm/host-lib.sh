# shellcheck shell=bash
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

# random_workload SEED COUNT ORIGIN_SECTORS POOL_SECTORS MAXLEN : COUNT writes of random sizes
# (1..MAXLEN sectors) at random sectors, 3 in 5 through the origin, the rest through the
# snapshot; lines "origin|snapshot SECTOR COUNT POOL_SECTOR" (data = POOL_SECTOR.. of a pool).
random_workload() {
  awk -v seed="$1" -v n="$2" -v size="$3" -v pool="$4" -v maxlen="$5" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) {
      len = 1 + int(rand() * maxlen)
      s = int(rand() * (size - len + 1))
      p = int(rand() * (pool - len + 1))
      printf "%s %d %d %d\n", (rand() < 0.6 ? "origin" : "snapshot"), s, len, p
    } }'
}

# apply_workload WORKLOAD POOL ORIGIN_IMG SNAPSHOT_IMG : the host model of what the kernel does:
# origin writes land on the origin, snapshot writes on the snapshot's view only.
apply_workload() {
  local kind s c p
  while read -r kind s c p; do
    if [ "$kind" = origin ]; then dev="$3"; else dev="$4"; fi
    dd if="$2" of="$dev" bs=512 skip="$p" seek="$s" count="$c" conv=notrunc status=none
  done < "$1"
}

# workload_exceptions WORKLOAD CHUNK_SECTORS : how many chunks the writes touch, i.e. how many
# exceptions a snapshot with that chunk size ends up with (one per chunk, whoever wrote it)
workload_exceptions() {
  awk -v cs="$2" '{ for (c = int($2 / cs); c <= int(($2 + $3 - 1) / cs); c++) seen[c] = 1 }
    END { n = 0; for (c in seen) n++; print n }' "$1"
}

# kernel_cow_status E CHUNK_SECTORS COW_SECTORS : the status the kernel's persistent store
# reports after E exceptions: "allocated/total metadata" in sectors. Chunk 0 is the header,
# then each metadata area (chunk_bytes/16 exceptions) is followed by its data chunks.
kernel_cow_status() {
  local e="$1" cs="$2" total="$3" per_area areas
  per_area=$((cs * 512 / 16))
  areas=$((e / per_area))
  echo "$(((2 + e + areas) * cs))/$total $(((areas + 2) * cs))"
}

# The kernel modules of the harness image, in load order (the guest init insmods
# modules/load-order), and those in the image but loaded only for scenarios whose `modules` file
# names them: fuse, loop (the userspace backend: systemd-userspace); fat, vfat, its code pages
# and efivarfs (UEFI scenarios mount the ESP and read systemd-boot's EFI variables).
vm_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
            dm-mod dm-bufio dm-snapshot dm-flakey dm-delay nbd)
vm_optional_modules=(fuse loop fat vfat nls_cp437 nls_ascii nls_utf8 efivarfs)

# vm_copy_module KVER NAME DIR : DIR/NAME.ko, uncompressed
vm_copy_module() {
  local path
  path="$(modinfo -k "$1" -n "$2" 2>/dev/null)" || die "kernel module $2 not found for $1"
  case "$path" in
    *.ko)     cp "$path" "$3/$2.ko" ;;
    *.ko.xz)  xz -dc "$path" > "$3/$2.ko" ;;
    *.ko.zst) zstd -qdc "$path" > "$3/$2.ko" ;;
    *.ko.gz)  gzip -dc "$path" > "$3/$2.ko" ;;
    *) die "unexpected module file $path" ;;
  esac
}

# vm_copy_modules KVER DIR : every harness module for KVER into DIR, and DIR/load-order
vm_copy_modules() {
  local m
  : > "$2/load-order"
  for m in "${vm_modules[@]}"; do vm_copy_module "$1" "$m" "$2"; echo "$m" >> "$2/load-order"; done
  for m in "${vm_optional_modules[@]}"; do vm_copy_module "$1" "$m" "$2"; done
}
