# The status forms a snapshot takes when its COW fills up, which the daemon's parser must know.
size=$(sectors /dev/disk/origin)
# (the origin stays zero: the invalidated COW becomes a small engine fixture)

# 1. Filled by origin writes: the snapshot is invalidated ("Invalid"), the origin write succeeds.
dm create snap-a --table "0 $size snapshot /dev/disk/origin /dev/disk/cow-a P 8"
dm create origin --table "0 $size snapshot-origin /dev/disk/origin"
check_eq new-cow-status "0 $size snapshot 16/128 16" "$(dm status snap-a)"
check origin-write-past-cow-size-succeeds dd if=/dev/zero of=/dev/mapper/origin bs=64k count=4 oflag=direct
check_eq status-invalid "0 $size snapshot Invalid" "$(dm status snap-a)"
echo "VM-INFO: invalid status: $(dm status snap-a)"   # for the engine's fixture (generate.sh)
check reading-invalid-snapshot-fails sh -c '! dd if=/dev/mapper/snap-a of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null'
dm remove origin
dm remove snap-a

# 2. With the "O" (overflow) store flag, filling the COW through the snapshot makes the write fail,
#    keeps the snapshot valid for the origin's sake, and shows "Overflow".
dm create snap-b --table "0 $size snapshot /dev/disk/origin /dev/disk/cow-b PO 8"
check_eq table-keeps-overflow-flag "0 $size snapshot $(majmin /dev/disk/origin) $(majmin /dev/disk/cow-b) PO 8" "$(dm table snap-b)"
check snapshot-write-past-cow-size-fails sh -c '! dd if=/dev/zero of=/dev/mapper/snap-b bs=64k count=4 oflag=direct 2>/dev/null'
check_eq status-overflow "0 $size snapshot Overflow" "$(dm status snap-b)"
dm remove snap-b
