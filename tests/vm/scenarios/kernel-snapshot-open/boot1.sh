# Opening a snapshot on the kernel backend (issue 20): `snapbackctl mount` of a set's volume
# shows the files as they were while the origin keeps the new ones; mounting writes nothing to
# the snapshot device nor to its COW; Rollback and Delete refuse while it is mounted (and the set
# stays active), and work after `umount`.
. /snapback/snapbackd-lib.sh
need_bin snapbackd
need_bin snapbackctl
mkdir -p /etc/snapback
cat > /etc/snapback/snapback.toml <<TOML
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "data"
device = "/dev/disk/vol"
auto = true
TOML
start_bus
snapbackd init --config /etc/snapback/snapback.toml
start_daemon
check daemon-starts owns_name
set_id() { tr ',' '\n' < "$1" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n1; }
json_value() { tr ',' '\n' < "$1" | sed -n "s/.*\"$2\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n1; }

dev=/dev/mapper/snapback-data
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$dev"
mkdir -p /mnt /snap
mount -t ext4 -o noatime "$dev" /mnt
echo "before the upgrade" > /mnt/etc-foo
sync
snapbackctl snapshot --json -d "before" > /tmp/s1.json
id="$(set_id /tmp/s1.json)"
check set-created test -n "$id"
echo "after the upgrade" > /mnt/etc-foo
echo "only after" > /mnt/new-file
sync
snap=/dev/mapper/snapback-data-$id
# there is no udev here: the kernel's own nodes (/dev/dm-N) of the snapshot and of its COW
dm_node() { echo "/dev/$(basename "$(readlink -f "/sys/dev/block/$(dmsetup info -c --noheadings -o major,minor --separator : "$1")")")"; }
snap_node="$(dm_node snapback-data-$id)"
cow_node="$(dm_node snapback-data-$id-cow)"
check snapshot-node-exists test -b "$snap_node"
check cow-node-exists test -b "$cow_node"
snap_before="$(sha "$snap_node")"
cow_before="$(sha "$cow_node")"
check hashes-taken test -n "$snap_before" -a -n "$cow_before"

snapbackctl --json mount "$id" data /snap > /tmp/m1.json
cat /tmp/m1.json
check_eq mount-device "$snap" "$(json_value /tmp/m1.json device)"
check_eq mount-fstype ext4 "$(json_value /tmp/m1.json fstype)"
check mount-options grep -q '"options": *"ro,noload"' /tmp/m1.json
check mounted-read-only grep -q " /snap ext4 ro," /proc/mounts
check_eq snapshot-has-old-content "before the upgrade" "$(cat /snap/etc-foo)"
check snapshot-lacks-new-file sh -c '! test -e /snap/new-file'
check_eq origin-has-new-content "after the upgrade" "$(cat /mnt/etc-foo)"
check snapshot-takes-no-write sh -c '! echo x > /snap/etc-foo 2>/dev/null'

rc=0; snapbackctl rollback "$id" 2>/tmp/rb.err || rc=$?
echo "VM-INFO: rollback while mounted: $(cat /tmp/rb.err)"
check_eq rollback-refused-while-mounted 1 "$rc"
check rollback-refusal-names-umount grep -q "umount $id data" /tmp/rb.err
rc=0; snapbackctl delete "$id" 2>/tmp/del.err || rc=$?
echo "VM-INFO: delete while mounted: $(cat /tmp/del.err)"
check_eq delete-refused-while-mounted 1 "$rc"
check set-still-active sh -c "snapbackctl show --json $id | grep -q '\"state\": *\"active\"'"
check snapshot-device-still-there test -b "$snap"

check umount-by-volume snapbackctl umount "$id" data
check not-mounted-any-more sh -c '! grep -q " /snap " /proc/mounts'
check_eq snapshot-bytes-unchanged "$snap_before" "$(sha "$snap_node")"
check_eq cow-bytes-unchanged "$cow_before" "$(sha "$cow_node")"

umount /mnt
check rollback-after-umount snapbackctl rollback --wait "$id"
mount -t ext4 "$dev" /mnt
check_eq volume-has-old-content "before the upgrade" "$(cat /mnt/etc-foo)"
check volume-lacks-new-file sh -c '! test -e /mnt/new-file'
umount /mnt

# Delete: refused while mounted by DIR, works after `umount ID DIR`.
snapbackctl snapshot --json -d "second" > /tmp/s2.json
id2="$(set_id /tmp/s2.json)"
check mount-second snapbackctl mount "$id2" data /snap
rc=0; snapbackctl delete "$id2" 2>/tmp/del2.err || rc=$?
check_eq delete-refused-while-mounted-2 1 "$rc"
check umount-by-dir snapbackctl umount "$id2" /snap
check delete-after-umount snapbackctl delete "$id2"
check snapshot-device-gone sh -c "! test -e /dev/mapper/snapback-data-$id2 && ! dmsetup info snapback-data-$id2 >/dev/null 2>&1"

stop_daemon
sed 's/^/VM-INFO: daemon: /' /tmp/snapbackd.log | grep -i "open\|busy\|error" || true
