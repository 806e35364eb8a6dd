# Boot 1: a persistent kernel snapshot (4 KiB chunks) of the origin; writes through the origin
# and through the snapshot; exact status lines; then the devices go away cleanly.
. /in/expected.env
size=$(sectors /dev/disk/origin)              # 32768
cow_size=$(sectors /dev/disk/cow)             # 40960
check_eq origin-starts-as-model "$ORIGIN_BEFORE" "$(sha /dev/disk/origin)"

dm create snap --table "0 $size snapshot /dev/disk/origin /dev/disk/cow P 8"
dm create origin --table "0 $size snapshot-origin /dev/disk/origin"
# a new COW: header chunk + first metadata area = 2 chunks = 16 sectors, all of them metadata
check_eq status-new "0 $size snapshot 16/$cow_size 16" "$(dm status snap)"
# dmsetup prints the empty status of snapshot-origin as a trailing space
check_eq origin-status "0 $size snapshot-origin " "$(dm status origin)"

dd if=/in/origin-write of=/dev/mapper/origin bs=64k oflag=direct 2>/dev/null
dd if=/in/snapshot-write of=/dev/mapper/snap bs=512 seek=20481 oflag=direct conv=notrunc 2>/dev/null
# 1024 + 1 exceptions, 256 per metadata area (4096 / 16 bytes): areas 0..4 in use.
# allocated = (header + 1025 data chunks + 5 area chunks) * 8 = 1031 * 8 = 8248
# metadata  = (header + 5 area chunks) * 8 = 48
check_eq status-after-writes "0 $size snapshot 8248/$cow_size 48" "$(dm status snap)"
check_eq snapshot-view "$SNAPSHOT_VIEW" "$(sha /dev/mapper/snap)"
check_eq origin-view "$ORIGIN_AFTER" "$(sha /dev/mapper/origin)"
check_eq table-line "0 $size snapshot $(majmin /dev/disk/origin) $(majmin /dev/disk/cow) P 8" "$(dm table snap)"

dm remove origin
dm remove snap
check_eq origin-disk-after-writes "$ORIGIN_AFTER" "$(sha /dev/disk/origin)"
