# Boot 3: "snapbackd activate" starts the merges before anything is mounted; both volumes mount
# at once and read the pre-upgrade trees while the merge still runs; then the power is cut.
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
set -- $(dm status snapback-root)
check "merge-still-running-when-mounted" test "${4%/*}" -gt "$5"
check_eq pre-upgrade-root-while-merging "$(cat /tmp/keep/root-v1)" "$(manifest /mnt/root)"
check_eq pre-upgrade-var-while-merging "$(cat /tmp/keep/var-v1)" "$(manifest /mnt/var)"
echo "VM-INFO: cutting power at $(dm status snapback-root)"
power_cut
