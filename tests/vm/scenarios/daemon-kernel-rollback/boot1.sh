# snapbackd's kernel backend end to end (issue 3 §3): ext4 on a volume, snapshot, change files,
# roll back while unmounted: the files are exactly as before. A set of two volumes (the daemon's
# suspended time is a figure). A rollback of a busy (mounted) volume is scheduled for next boot.
. /scenario/daemon.sh
snapbackd init --config /etc/snapback.toml
start_bus
start_daemon
check_eq backend-is-kernel kernel "$(snapbackctl status --json | tr ',' '\n' | sed -n 's/.*"backend": *"\([^"]*\)".*/\1/p')"
dev="$(volume_device data)"
check device-is-served test -b "$dev"
check device-in-status sh -c "snapbackctl status --json | grep -q '\"$dev\"'"
mkfs.ext4 -q "$dev"
mount -t ext4 "$dev" /mnt
mkdir -p /mnt/etc /mnt/usr/lib
echo "version=1" > /mnt/etc/app.conf
dd if=/dev/urandom of=/mnt/usr/lib/libapp.so.1 bs=64k count=64 2>/dev/null
tree_sums > /tmp/before.sums
sync

snapbackctl snapshot --json -d "before upgrade" > /tmp/snap1.json
cat /tmp/snap1.json
set1="$(set_id /tmp/snap1.json)"
check snapshot-set-created test -n "$set1"
echo "version=2 (broken)" > /mnt/etc/app.conf
rm /mnt/usr/lib/libapp.so.1
dd if=/dev/urandom of=/mnt/usr/lib/libapp.so.2 bs=64k count=32 2>/dev/null
sync
check_ne files-changed "$(cat /tmp/before.sums)" "$(tree_sums)"
umount /mnt
check rollback-of-idle-volume-merges snapbackctl rollback --wait "$set1"
check merged-set-is-gone sh -c "! snapbackctl show $set1 >/dev/null 2>&1"
mount -t ext4 "$dev" /mnt
check_eq files-back-after-rollback "$(cat /tmp/before.sums)" "$(tree_sums)"
check no-added-file sh -c '! test -e /mnt/usr/lib/libapp.so.2'

# 2. a set of two volumes, both with a mounted ext4 and dirty data: the daemon's own
#    measure of how long the origins stayed suspended
dev2="$(volume_device logs)"
mkfs.ext4 -q "$dev2"; mkdir -p /mnt2; mount -t ext4 "$dev2" /mnt2
dd if=/dev/urandom of=/mnt2/log bs=64k count=32 2>/dev/null        # 2 MiB, not synced
dd if=/dev/urandom of=/mnt/usr/lib/libapp.so.3 bs=64k count=32 2>/dev/null
tree_sums > /tmp/before2.sums
mkdir -p /out; cp /tmp/before2.sums /out/
snapbackctl snapshot --json -d "second" data logs > /tmp/snap2.json
set2="$(set_id /tmp/snap2.json)"
check_eq set-of-two-volumes "2" "$(grep -o '"logs"\|"data"' /tmp/snap2.json | sort -u | wc -l)"
check list-shows-the-set sh -c "snapbackctl list --json | grep -Eq '\"id\": *${set2}[,} ]'"
figure daemon-snapshot-set-of-2-suspended "$(($(last_suspended_us) / 1000))" ms
umount /mnt2

# 3. busy volume: the rollback is scheduled (exit status 3), done at the next boot
echo "version=3 (broken again)" > /mnt/etc/app.conf
sync
check_ne files-changed-again "$(cat /tmp/before2.sums)" "$(tree_sums)"
rc=0; snapbackctl rollback "$set2" || rc=$?
check_eq rollback-of-busy-volume-is-scheduled 3 "$rc"
umount /mnt
stop_daemon
sync
sed 's/^/VM-INFO: daemon: /' /tmp/snapbackd.log
