# Boot 1: format the pool, activate, put ext4 on both volumes. (a) An idle rollback over
# D-Bus: merge now, tree exact, volume back to linear. (b) A two-volume set taken while both
# are mounted; "upgrade"; rollback while mounted is scheduled as a whole; cancel works.
. /scenario/lib.sh
need_bin snapbackd
write_config
check init-pool snapbackd init --config /etc/snapback/snapback.toml
check activate snapbackd activate --config /etc/snapback/snapback.toml
check_eq root-is-linear linear "$(target_of root)"
for v in root var; do mkfs.ext4 -q -F "/dev/mapper/snapback-$v"; mount_vol $v; done
tree /mnt/root root; tree /mnt/var var
mkdir -p /tmp/keep
manifest /mnt/root > /tmp/keep/root-v1; manifest /mnt/var > /tmp/keep/var-v1

start_bus
start_daemon
check start-daemon owns_name
check_eq backend-property 's "kernel"' "$(busctl get-property $BUS $MGR $BUS.Manager Backend)"

# (a) idle rollback of root
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 root "before tweak" 0)"
check_eq snapshot-a-path "o \"$SNAP/1\"" "$out"
check_eq snapshot-a-origin-is-snapshot-origin snapshot-origin "$(target_of root)"
upgrade /mnt/root 5
check_ne tree-changed "$(cat /tmp/keep/root-v1)" "$(manifest /mnt/root)"
umount /mnt/root
check_eq rollback-idle-merges 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
check merge-a-finishes wait_gone 1 120
check_eq after-merge-root-is-linear linear "$(target_of root)"
check no-leftover-devices no_device 'snapback-root-'
mount_vol root
check_eq idle-rollback-tree-exact "$(cat /tmp/keep/root-v1)" "$(manifest /mnt/root)"

# (b) two-volume set while both are mounted; upgrade; rollback is scheduled; cancel
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 2 root var "before upgrade" 0)"
check_eq snapshot-b-path "o \"$SNAP/2\"" "$out"
check_eq set-b-volumes 'as 2 "root" "var"' "$(busctl get-property $BUS $SNAP/2 $BUS.Snapshot Volumes)"
upgrade /mnt/root 24; upgrade /mnt/var 4
manifest /mnt/root > /tmp/keep/root-v2; manifest /mnt/var > /tmp/keep/var-v2
check_eq rollback-busy-is-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0)"
check_eq state-scheduled merge-scheduled "$(state 2)"
check cancel busctl call $BUS $MGR $BUS.Manager CancelRollback o $SNAP/2
check_eq state-active-after-cancel active "$(state 2)"
stop_daemon
umount /mnt/root /mnt/var
keep_save
