# Boot 3: the half-done merge resumes from the COW's metadata and finishes; the origin then
# holds exactly what the snapshot showed, also once mapped linearly with the COW dropped.
. /in/expected.env
size=$(sectors /dev/disk/origin); cow_size=$(sectors /dev/disk/cow)
dm create origin --table "0 $size snapshot-merge /dev/disk/origin /dev/disk/cow P 8"
set -- $(dm status origin)
check "merge-resumes-below-start" test "${4%/*}" -lt 8248
check merge-finishes wait_merged origin 120
set -- $(dm status origin)
check_eq merged-status-allocated-equals-metadata "$5" "${4%/*}"
check_eq merged-origin-view "$SNAPSHOT_VIEW" "$(sha /dev/mapper/origin)"
dm suspend origin
dm load origin --table "0 $size linear /dev/disk/origin 0"
dm resume origin
check_eq linear-after-merge "$SNAPSHOT_VIEW" "$(sha /dev/mapper/origin)"
dm remove origin
check_eq origin-disk-after-merge "$SNAPSHOT_VIEW" "$(sha /dev/disk/origin)"
