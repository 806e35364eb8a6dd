# Boot 2 ("reboot"): the persistent COW is read back with the same status and view; then the
# merge starts at boot, as for a scheduled rollback, and the power is cut half-way.
. /in/expected.env
size=$(sectors /dev/disk/origin); cow_size=$(sectors /dev/disk/cow)
dm create snap --table "0 $size snapshot /dev/disk/origin /dev/disk/cow P 8"
check_eq status-after-reboot "0 $size snapshot 8248/$cow_size 48" "$(dm status snap)"
check_eq snapshot-view-after-reboot "$SNAPSHOT_VIEW" "$(sha /dev/mapper/snap)"
dm remove snap

# the COW behind a 100 ms delay, so the merge lasts long enough for the power cut to land in it
slow_device cow-slow /dev/disk/cow 100
dm create origin --table "0 $size snapshot-merge /dev/disk/origin /dev/mapper/cow-slow P 8"
first="$(dm status origin)"
check "merge-status-form" sh -c "echo '$first' | grep -Eq '^0 $size snapshot-merge [0-9]+/$cow_size [0-9]+\$'"
n=0
while :; do
  set -- $(dm status origin); alloc="${4%/*}"
  # about half of it back (from 8248 allocated down to 48 of metadata), but not finished
  [ "$alloc" -le $(( (8248 + 48) / 2 )) ] && [ "$alloc" -gt "$5" ] && break
  [ "$alloc" = "$5" ] && { echo "CHECK FAIL merge-in-progress-seen: finished before the cut"; exit 1; }
  n=$((n + 1)); [ $n -lt 3000 ] || { echo "CHECK FAIL merge-in-progress-seen: $(dm status origin)"; exit 1; }
done
echo "CHECK PASS merge-in-progress-seen"
echo "VM-INFO: cutting power at $(dm status origin)"
power_cut
