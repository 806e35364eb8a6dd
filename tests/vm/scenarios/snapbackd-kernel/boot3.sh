# Boot 3: "snapbackd activate" starts the merges before anything is mounted; both volumes mount
# at once and read the pre-upgrade content while the merge still runs; then the power is cut
# in the middle of the merge.
. /scenario/lib.sh
write_config; keep_load
echo 1 > /sys/module/dm_snapshot/parameters/snapshot_copy_throttle   # keep the merge running
t0=$(now_ns)
check activate snapbackd activate --config /etc/snapback/snapback.toml
mount_vol root
t1=$(now_ns)
figure activate-to-mounted-ms $(((t1 - t0) / 1000000)) ms
mount_vol var
check_eq root-merging snapshot-merge "$(target_of root)"
check_eq var-merging snapshot-merge "$(target_of var)"
# a quick look while merging (the full trees are compared in boot 4, also mid-merge)
check_eq pre-upgrade-etc-while-merging "$(grep ' ./etc' /tmp/keep/root-v1)" "$(manifest /mnt/root | grep ' ./etc')"
set -- $(dm status snapback-root)
check "still-merging-at-power-cut" test "${4%/*}" -gt "$5"
echo "${4%/*}" > /tmp/keep/allocated-at-cut; keep_save; sync
echo "VM-INFO: cutting power at $(dm status snapback-root)"
power_cut
