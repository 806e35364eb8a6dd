# Boot 3: "snapbackd activate" starts the merges before anything is mounted; both volumes mount
# at once and read the pre-upgrade content while the merge still runs; then the power is cut
# in the middle of the merge.
. /scenario/lib.sh
# The pool (and so every COW) behind a 200 ms delay, so the merge is still running when the
# power is cut below, however fast or loaded the machine (a merge copies long runs of chunks
# in few large I/Os, so only a long per-I/O delay slows it enough).
slow_device slowpool /dev/disk/pool 200
echo 1 > /sys/module/dm_snapshot/parameters/snapshot_copy_throttle
write_config /dev/mapper/slowpool; keep_load
t0=$(now_ns)
check activate snapbackd activate --config /etc/snapback/snapback.toml
mount_vol root
t1=$(now_ns)
figure activate-to-mounted-ms $(((t1 - t0) / 1000000)) ms
mount_vol var
check_eq root-merging snapshot-merge "$(target_of root)"
check_eq var-merging snapshot-merge "$(target_of var)"
# a quick look while merging (every read of a changed chunk costs 200 ms here; the full trees
# are compared in boot 4, also mid-merge)
check_eq pre-upgrade-file-while-merging "$(grep ' ./etc/conf.d/file3.conf ' /tmp/keep/root-v1)" \
  "$(cd /mnt/root && echo "F ./etc/conf.d/file3.conf $(stat -c '%s %a %u:%g' etc/conf.d/file3.conf) $(sha256sum < etc/conf.d/file3.conf | cut -c1-64)")"
check upgrade-added-file-gone-while-merging test ! -e /mnt/root/usr/lib/app/libnew.so
set -- $(dm status snapback-root)
check "still-merging-at-power-cut" test "${4%/*}" -gt "$5"
echo "${4%/*}" > /tmp/keep/allocated-at-cut; keep_save; sync
echo "VM-INFO: cutting power at $(dm status snapback-root)"
power_cut
