# Boot 3: the kernel itself resumes the merge the power cut interrupted; it ends where the
# uninterrupted merge of boot 1 ended.
. /in/expected.env
dm create merging --table "0 8192 snapshot-merge /dev/disk/origin8-cut /dev/disk/cow8-cut P 8"
check chunk8/kernel-resumed-merge-finishes wait_merged merging 120
check_eq chunk8/kernel-resumed-merge-gives-snapshot-view "$SNAPSHOT_VIEW_8" "$(sha /dev/mapper/merging)"
dm remove merging
