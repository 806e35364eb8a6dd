# Figures for the anchors our userspace engine is held against (issue 3 §4), all in this one
# VM run under software emulation (TCG): absolute speeds are the emulator's, ratios are the point.
mib=32
bytes=$((mib * 1024 * 1024))
size1=$(sectors /dev/disk/vol1); size2=$(sectors /dev/disk/vol2)
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }
rate() { awk -v b="$1" -v ms="$2" 'BEGIN { printf "%.1f", b / 1048576 / (ms / 1000) }'; }

# 1. Origin write throughput, one kernel snapshot vs none, same device path (snapshot-origin),
#    same writes (64 KiB O_DIRECT, first write to every chunk), for 4 KiB and 64 KiB chunks;
# 3. kernel merge throughput of that COW (every written chunk restored).
#    Each measured 3 times (fresh COW each time); the figure is the median.
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
for cs in 8 128; do
  plain=""; snap=""; merge=""
  for rep in 1 2 3; do
    dm create vol1 --table "0 $size1 snapshot-origin /dev/disk/vol1"
    t=$(now_ns); dd if=/dev/zero of=/dev/mapper/vol1 bs=64k count=$((mib * 16)) oflag=direct 2>/dev/null
    plain="$plain $(ms_since $t)"
    dd if=/dev/zero of=/dev/disk/cow1 bs=4k count=1 oflag=direct 2>/dev/null   # a fresh COW
    dm create snap1 --table "0 $size1 snapshot /dev/disk/vol1 /dev/disk/cow1 P $cs"
    # the origin only learns the new snapshot's chunk size (how it splits writes) when resumed
    dm suspend vol1; dm resume vol1
    t=$(now_ns); dd if=/dev/zero of=/dev/mapper/vol1 bs=64k count=$((mib * 16)) oflag=direct 2>/dev/null
    snap="$snap $(ms_since $t)"
    set -- $(dm status snap1)
    check_eq "chunk$cs/run$rep/every-chunk-copied" "$(((mib * 2048 / cs) + 2 + (mib * 2048 / cs) / (cs * 32)))" "$((${4%/*} / cs))"
    dm remove snap1
    dm suspend vol1
    dm load vol1 --table "0 $size1 snapshot-merge /dev/disk/vol1 /dev/disk/cow1 P $cs"
    t=$(now_ns); dm resume vol1
    check "chunk$cs/run$rep/merge-finishes" wait_merged vol1 300
    merge="$merge $(ms_since $t)"
    dm remove vol1
  done
  echo "VM-INFO: chunk $cs ms: no snapshot:$plain; one snapshot:$snap; merge:$merge"
  plain_ms=$(median3 $plain); snap_ms=$(median3 $snap); merge_ms=$(median3 $merge)
  figure "origin-write-no-snapshot-chunk$cs" "$(rate $bytes $plain_ms)" MiB/s
  figure "origin-write-one-snapshot-chunk$cs" "$(rate $bytes $snap_ms)" MiB/s
  figure "origin-write-ratio-snapshot-vs-none-chunk$cs" "$(awk -v a="$plain_ms" -v b="$snap_ms" 'BEGIN { printf "%.2f", a / b }')" x
  figure "kernel-merge-chunk$cs" "$(rate $bytes $merge_ms)" MiB/s
done
# the merges restored what was there before each snapshot: zeros (the origin was zero-filled first)
check_eq merges-restored-the-origin \
  "$(dd if=/dev/zero bs=1M count=$mib 2>/dev/null | sha256sum | cut -d' ' -f1)" \
  "$(dd if=/dev/disk/vol1 bs=1M count=$mib 2>/dev/null | sha256sum | cut -d' ' -f1)"

# 2. Suspended time of a snapshot set of two volumes, each with a mounted ext4 that has dirty
#    data: suspend both (flushes), create both snapshots, switch both to snapshot-origin, resume.
for v in 1 2; do
  eval "size=\$size$v"
  dd if=/dev/zero of=/dev/disk/cow$v bs=4k count=1 oflag=direct 2>/dev/null
  mkfs.ext4 -q -F /dev/disk/vol$v
  dm create vol$v-real --table "0 $size linear /dev/disk/vol$v 0"
  dm create vol$v --table "0 $size linear /dev/mapper/vol$v-real 0"
  mkdir -p /mnt/vol$v; mount -t ext4 /dev/mapper/vol$v /mnt/vol$v
  dd if=/dev/urandom of=/mnt/vol$v/dirty bs=64k count=64 2>/dev/null   # 4 MiB in the page cache
  echo "before the snapshot" > /mnt/vol$v/file
done
t=$(now_ns)
dm suspend vol1; dm suspend vol2
dm create snap1 --table "0 $size1 snapshot /dev/mapper/vol1-real /dev/disk/cow1 P 8"
dm create snap2 --table "0 $size2 snapshot /dev/mapper/vol2-real /dev/disk/cow2 P 8"
dm load vol1 --table "0 $size1 snapshot-origin /dev/mapper/vol1-real"
dm load vol2 --table "0 $size2 snapshot-origin /dev/mapper/vol2-real"
dm resume vol1; dm resume vol2
figure snapshot-set-of-2-suspended "$(ms_since $t)" ms
for v in 1 2; do
  echo "after the snapshot" > /mnt/vol$v/file; sync
  mkdir -p /mnt/snap$v; mount -t ext4 -o ro,noload /dev/mapper/snap$v /mnt/snap$v
  check_eq "snapshot-set/vol$v-snapshot-has-old-file" "before the snapshot" "$(cat /mnt/snap$v/file)"
  check_eq "snapshot-set/vol$v-origin-has-new-file" "after the snapshot" "$(cat /mnt/vol$v/file)"
  umount /mnt/snap$v; umount /mnt/vol$v
done
