# The kernel loads each COW the engine wrote as a persistent snapshot: its status, its snapshot
# device and its own snapshot-merge must agree with what the engine said about the same COW.
. /in/expected.env
for cs in 8 32 128; do
  eval "usage=\$ENGINE_USAGE_$cs view=\$ENGINE_VIEW_$cs origin=\$ENGINE_ORIGIN_$cs merged=\$ENGINE_MERGED_$cs"
  check_eq chunk$cs/origin-as-engine-left-it "$origin" "$(sha /dev/disk/origin$cs)"
  dm create snap$cs --table "0 8192 snapshot /dev/disk/origin$cs /dev/disk/cow$cs P $cs"
  check_eq chunk$cs/kernel-status-equals-engine-usage "0 8192 snapshot $usage" "$(dm status snap$cs)"
  check_eq chunk$cs/kernel-snapshot-device-equals-engine-view "$view" "$(sha /dev/mapper/snap$cs)"
  dm remove snap$cs
  dm create origin$cs --table "0 8192 snapshot-merge /dev/disk/origin$cs /dev/disk/cow$cs P $cs"
  check chunk$cs/kernel-merge-finishes wait_merged origin$cs 120
  check_eq chunk$cs/kernel-merge-equals-engine-merge "$merged" "$(sha /dev/mapper/origin$cs)"
  dm remove origin$cs
done

# The engine's own merge of its 4 KiB-chunk COW, stopped half-way: the kernel's snapshot-merge
# takes over from the COW's metadata and ends where the engine's full merge ended.
dm create half --table "0 8192 snapshot-merge /dev/disk/origin8-half /dev/disk/cow8-half P 8"
set -- $(dm status half)
check "chunk8/half-merged-by-engine-has-fewer-exceptions" test "${4%/*}" -lt "${ENGINE_USAGE_8%%/*}"
check chunk8/kernel-finishes-engine-merge wait_merged half 120
check_eq chunk8/kernel-finished-merge-equals-engine-merge "$ENGINE_MERGED_8" "$(sha /dev/mapper/half)"
dm remove half

# A COW the engine invalidated (filled by origin writes) is invalid for the kernel too.
dm create inv --table "0 8192 snapshot /dev/disk/origin-inv /dev/disk/cow-inv P 8"
check_eq engine-invalidated-cow-is-invalid-for-kernel "0 8192 snapshot Invalid" "$(dm status inv)"
dm remove inv
