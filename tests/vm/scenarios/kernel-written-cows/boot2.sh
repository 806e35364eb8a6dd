# Boot 2: the kernel merges the 4 KiB-chunk COW again (the copy made in boot 1) and the power
# is cut half-way; host-after-boot2 keeps origin8-cut.img and cow8-cut.img as that state, for
# the engine to finish (fixture kernel-cow-chunk8/mid-merge-*).
. /in/expected.env
slow_device cow-slow /dev/disk/cow8-cut 100   # long enough a merge to cut the power in it
dm create merging --table "0 8192 snapshot-merge /dev/disk/origin8-cut /dev/mapper/cow-slow P 8"
start="$(dm status merging)"
half=$(( (8176 + 40) / 2 ))   # cut once about half the chunks went back (status was 8176/10240 40)
n=0
while :; do
  set -- $(dm status merging); alloc="${4%/*}"
  [ "$alloc" -le "$half" ] && [ "$alloc" -gt "$5" ] && break
  [ "$alloc" = "$5" ] && { echo "CHECK FAIL chunk8/merge-in-progress-seen: finished before the cut"; exit 1; }
  n=$((n + 1)); [ $n -lt 3000 ] || { echo "CHECK FAIL chunk8/merge-in-progress-seen: $(dm status merging)"; exit 1; }
done
echo "CHECK PASS chunk8/merge-in-progress-seen"
echo "VM-INFO: merge started at '$start', power cut at '$(dm status merging)'"
power_cut
