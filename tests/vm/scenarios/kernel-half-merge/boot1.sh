# Boot 1: two rollbacks left half done.
# (A) set 1 = volume a. Its merge is cut half way by a backing disk that starts failing
#     writes: the set is merge-failed, Delete and CancelRollback are refused, and a daemon
#     restart with the disk still failing keeps a as snapshot-merge reading the snapshot's data.
# (B) set 2 = volumes b and c. The merge starts on b but not on c (c's snapshot device is
#     opened while b's merge starts); then c is mounted and the daemon restarts: b must stay
#     snapshot-merge, never go back to snapshot-origin over its half-merged -real; likewise
#     once the retry is deferred.
. /scenario/lib.sh
need_bin snapbackd
need_bin snapbackctl
dm create slowpool --table "$(pool_table 0)"
dm create vback-a --table "$(backing_table_healthy)"
write_config
check init-pool snapbackd init --config /etc/snapback/snapback.toml
check activate snapbackd activate --config /etc/snapback/snapback.toml
mkdir -p /tmp/keep

# the data at snapshot time: random bytes on a and b, a small tree on c
for v in a b; do
  dd if=/dev/urandom of="/dev/mapper/snapback-$v" bs=64k count=64 oflag=direct 2>/dev/null
  chunk_sums "/dev/mapper/snapback-$v" > "/tmp/keep/$v-v1.chunks"
  sha "/dev/mapper/snapback-$v" > "/tmp/keep/$v-v1.sha"
done
mkfs.ext4 -q -F /dev/mapper/snapback-c
mkdir -p /mnt/c && mount -t ext4 /dev/mapper/snapback-c /mnt/c
mkdir -p /mnt/c/etc && i=0
while [ $i -lt 40 ]; do echo "setting $i" > /mnt/c/etc/f$i; i=$((i + 1)); done
dd if=/dev/urandom of=/mnt/c/big bs=64k count=32 2>/dev/null; sync
manifest /mnt/c > /tmp/keep/c-v1
keep_save

start_bus
start_daemon
check start-daemon owns_name
check_eq snapshot-1 "o \"$SNAP/1\"" "$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 a "A" 0)"
check_eq snapshot-2 "o \"$SNAP/2\"" "$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 2 b c "B" 0)"

# the "upgrade": every other chunk of a and b rewritten, c's tree changed
write_chunks /dev/mapper/snapback-a
write_chunks /dev/mapper/snapback-b
echo changed >> /mnt/c/etc/f3; rm /mnt/c/etc/f4; dd if=/dev/urandom of=/mnt/c/new bs=64k count=16 2>/dev/null; sync
chunk_sums /dev/mapper/snapback-a > /tmp/keep/a-v2.chunks
check_eq a-upgrade-kept-half-the-chunks 128 "$(same_chunks /tmp/keep/a-v1.chunks /tmp/keep/a-v2.chunks)"
manifest /mnt/c > /tmp/keep/c-v2
check_ne c-tree-changed "$(cat /tmp/keep/c-v1)" "$(cat /tmp/keep/c-v2)"

# ---- (A) a merge cut half way by a failing disk
pool_delay 100
snapbackctl --json watch 1 > /tmp/watch1 2>&1 &
WATCH=$!
sleep 2   # it subscribes before reading the state; give it time to be listening
# the snapshot's status before the merge: header + metadata chunk + 128 data chunks, 32 sectors each
start_alloc=$(dm status snapback-a-1 | awk '{split($4, a, "/"); print a[1]}')
check_eq a-snapshot-has-128-exceptions $(((2 + 128) * 32)) "$start_alloc"
check_eq a-rollback-merging 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
check_eq a-table-merge snapshot-merge "$(target_of a)"
# wait until at least 4 chunks are merged, then the disk fails every write
n=0
while [ "$(alloc a)" -gt $((start_alloc - 4 * 32)) ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
at_fail=$(alloc a)
backing_reload "$(backing_table_failing)"
echo "VM-INFO: backing of a fails writes from allocated=$at_fail (start $start_alloc)"
check "a-caught-part-way" test "$at_fail" -lt "$start_alloc" -a "$at_fail" -gt 64
figure a-exceptions-left-when-disk-failed $(((at_fail - 64) / 32)) chunks
n=0; while kill -0 $WATCH 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
check_eq a-kernel-merge-failed "Merge failed" "$(dm status snapback-a | cut -d' ' -f4-)"
check a-kernel-log-write-error sh -c "dmesg | grep -q 'error: shutting down merge'"
check a-signal-merge-finished-not-ok sh -c "grep '\"merge-finished\"' /tmp/watch1 | grep '\"id\":1' | grep -q '\"ok\":false'"
echo "VM-INFO: watch: $(grep merge-finished /tmp/watch1)"
check_eq a-state-merge-failed merge-failed "$(state 1)"
check_eq a-delete-refused-busy org.snapback.Snapback1.Error.Busy "$(dbus_error Delete objpath:$SNAP/1)"
check_eq a-cancel-refused org.snapback.Snapback1.Error.InvalidArgument "$(dbus_error CancelRollback objpath:$SNAP/1)"
check_eq a-still-merge-failed merge-failed "$(state 1)"
# the disk itself is half merged: some rewritten chunks already hold the snapshot's data again
chunk_sums /dev/mapper/vback-a > /tmp/a-disk.chunks
disk_v1=$(same_chunks /tmp/keep/a-v1.chunks /tmp/a-disk.chunks)
echo "VM-INFO: disk a: $disk_v1 of $CHUNKS chunks as at snapshot time"
check a-disk-half-merged test "$disk_v1" -gt 128 -a "$disk_v1" -lt 256
check_eq a-table-still-merge snapshot-merge "$(target_of a)"
chunk_sums /dev/mapper/snapback-a > /tmp/a-now.chunks
check_eq a-reads-snapshot-every-chunk 256 "$(same_chunks /tmp/keep/a-v1.chunks /tmp/a-now.chunks)"

# ---- (B) a set whose merge started on b only
umount /mnt/c
dm mknodes snapback-c-2               # the daemon makes nodes for the volumes only
# Opened before the call, c's snapshot device makes Rollback refuse the whole set, Busy, with
# nothing started (kernel-snapshot-open checks that). Opened while b's merge starts, after that
# check, it stops c's start only: the pool is slowed down so that b's snapshot-merge table,
# whose constructor reads b's COW through it, takes seconds to load, and c's snapshot device
# is opened as soon as b's own has gone (just before that load).
pool_delay 1000
# (dbus-send cannot send an empty a{sv}: snapbackctl words the reply by its error name)
snapbackctl rollback 2 2>/tmp/rb2.err &
RB=$!
n=0; while dm info snapback-b-2 >/dev/null 2>&1 && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
exec 7< /dev/mapper/snapback-c-2     # c's snapshot device open: its merge cannot start
rb_rc=0; wait $RB || rb_rc=$?
pool_delay 100
check_ne b-rollback-fails-on-c 0 "$rb_rc"
check b-rollback-error-is-backend grep -q '^snapbackctl: the storage backend failed: starting the merge into volume c: .*the snapshot device is open' /tmp/rb2.err
echo "VM-INFO: rollback 2: $(cat /tmp/rb2.err)"
exec 7<&-
check_eq b-state-merge-failed merge-failed "$(state 2)"
check_eq b-table-merge snapshot-merge "$(target_of b)"
check_eq c-table-origin snapshot-origin "$(target_of c)"
mount -t ext4 /dev/mapper/snapback-c /mnt/c
b_before=$(alloc b)

# ---- restart with a's disk still failing and c mounted
stop_daemon
start_daemon
check restart-1 owns_name
check a-merge-failed-after-restart wait_state 1 merge-failed 30
check_eq a-table-merge-after-restart snapshot-merge "$(target_of a)"
chunk_sums /dev/mapper/snapback-a > /tmp/a-now.chunks
check_eq a-reads-snapshot-after-restart 256 "$(same_chunks /tmp/keep/a-v1.chunks /tmp/a-now.chunks)"
check_eq a-delete-refused-after-restart org.snapback.Snapback1.Error.Busy "$(dbus_error Delete objpath:$SNAP/1)"
echo "VM-INFO: b merge status before restart alloc=$b_before, after: $(dm status snapback-b)"
check_eq b-state-after-restart merge-failed "$(state 2)"
check_eq b-table-merge-after-restart snapshot-merge "$(target_of b)"
check_eq c-table-origin-after-restart snapshot-origin "$(target_of c)"
check_eq c-tree-untouched "$(cat /tmp/keep/c-v2)" "$(manifest /mnt/c)"
check_eq b-delete-refused org.snapback.Snapback1.Error.Busy "$(dbus_error Delete objpath:$SNAP/2)"
chunk_sums /dev/mapper/snapback-b > /tmp/b-now.chunks
check_eq b-reads-snapshot-every-chunk 256 "$(same_chunks /tmp/keep/b-v1.chunks /tmp/b-now.chunks)"

# the retry while c is mounted is deferred (merge-scheduled, merge started), across a restart
check_eq b-retry-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0)"
check_eq b-state-scheduled merge-scheduled "$(state 2)"
stop_daemon
start_daemon
check restart-2 owns_name
check_eq b-scheduled-after-restart merge-scheduled "$(state 2)"
check_eq b-table-merge-after-restart-2 snapshot-merge "$(target_of b)"
check_eq c-table-origin-after-restart-2 snapshot-origin "$(target_of c)"
chunk_sums /dev/mapper/snapback-b > /tmp/b-now.chunks
check_eq b-reads-snapshot-after-restart-2 256 "$(same_chunks /tmp/keep/b-v1.chunks /tmp/b-now.chunks)"
check a-merge-failed-after-restart-2 wait_state 1 merge-failed 30
# a retry of a merge the kernel stopped waits for the next boot (a second snapshot-merge table
# over the same COW is refused): scheduled, and the volume stays snapshot-merge
check_eq a-retry-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
check_eq a-state-scheduled merge-scheduled "$(state 1)"
check_eq a-table-merge-after-retry snapshot-merge "$(target_of a)"
stop_daemon
umount /mnt/c
