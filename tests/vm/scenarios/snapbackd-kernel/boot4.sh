# Boot 4: after the power cut, activation resumes the merges where the COW's metadata says they
# stopped; the volumes read as before the upgrade at once; snapbackd follows the merges to the
# end, removes the set and returns both volumes to plain linear mappings; the trees are exact.
. /scenario/lib.sh
slow_device slowpool /dev/disk/pool 200   # as in boot 3, so the resumed merge can be seen
write_config /dev/mapper/slowpool; keep_load
check activate snapbackd activate --config /etc/snapback/snapback.toml
check_eq root-still-merging snapshot-merge "$(target_of root)"
set -- $(dm status snapback-root); left=$((${4%/*} - $5))
check "merge-resumes-where-it-was-cut" test "$left" -gt 0 -a "${4%/*}" -le "$(cat /tmp/keep/allocated-at-cut)"
mount_vol root; mount_vol var
check upgrade-added-file-gone-after-resume test ! -e /mnt/root/usr/lib/app/libnew.so
umount /mnt/root /mnt/var
t0=$(now_ns)
start_bus
start_daemon
check start-daemon owns_name
check merge-finishes wait_gone 2 400
t1=$(now_ns)
figure merge-rest-sectors "$left" sectors
figure merge-rest-ms-behind-200ms-delay $(((t1 - t0) / 1000000)) ms
check_eq root-linear linear "$(target_of root)"
check_eq var-linear linear "$(target_of var)"
check no-leftover-devices no_device 'snapback-(root|var)-'
stop_daemon
mount_vol root; mount_vol var
check_eq root-tree-exact "$(cat /tmp/keep/root-v1)" "$(manifest /mnt/root)"
check_eq var-tree-exact "$(cat /tmp/keep/var-v1)" "$(manifest /mnt/var)"
umount /mnt/root /mnt/var
