# Boot 1 (loader.conf default: the old kernel). The administrator's system: pool, the root
# volume with its tree, /boot = the ESP. Snapshot of the root set records the boot
# configuration and writes the rollback entry; then the "upgrade": new kernel in and the
# default, old kernel out, "/" changed.
. /scenario/lib.sh
need_bin snapbackd
check_eq boots-old-kernel "$old" "$(uname -r)"
efivars_mount
check_eq loader-selected-old-entry "$mid-$old.conf" "$(loader_var LoaderEntrySelected)"
write_config
check init-pool snapbackd init --config $CONF
check activate-first snapbackd activate --config $CONF --cmdline /proc/cmdline
mkfs.ext4 -q -F /dev/mapper/snapback-root
mount_root; tree /mnt/root
mkdir -p /tmp/keep
manifest /mnt/root > /tmp/keep/root-v1
mount_boot
boot_state > /tmp/keep/boot-v1
check boot-state-has-old-kernel grep -q " $mid/$old/linux\$" /tmp/keep/boot-v1
start_bus
start_daemon
check start-daemon owns_name
used0="$(pool_used)"; echo "$used0" > /tmp/keep/used0
t0=$(now_ns)
out="$(call Snapshot 'assa{sv}' 1 root "before upgrade" 0)"
figure snapshot-with-boot-record-ms $(( ($(now_ns) - t0) / 1000000 )) ms
check_eq snapshot-1 "o \"$SNAP/1\"" "$out"
used1="$(pool_used)"
echo "VM-INFO: pool used bytes before the set $used0, after $used1; Status: $(call Status)"
figure pool-used-before-set "$used0" bytes
figure pool-used-with-set-1 "$used1" bytes
e=/boot/loader/entries/snapback-rollback-1.conf
check rollback-entry-1-on-esp test -f $e
cp $e /tmp/keep/entry-1 2>/dev/null || true
echo "VM-INFO: rollback entry 1: $(tr '\n' '|' < $e)"
check rollback-entry-1-has-parameter grep -q '^options .* snapback.rollback=1$' $e
check rollback-entry-1-keeps-console grep -q "^options console=ttyS0 panic=-1 quiet" $e
# a kept copy of the old kernel (the upgrade below removes the one in /$mid/)
linux="$(entry_field $e linux)"
check rollback-entry-1-boots-a-kept-copy sh -c "echo '$linux' | grep -q '^/snapback/[0-9a-f]*/linux\$'"
check_eq rollback-entry-1-boots-old-kernel "$(sha256sum < "/boot/$mid/$old/linux" | cut -c1-64)" \
  "$(sha256sum < "/boot$linux" | cut -c1-64)"
check rollback-entry-1-title grep -q '^title Roll back to snapshot 1: before upgrade (' $e
# the boot files stay as they were: recording writes nothing but snapback's own entry
check_eq record-leaves-boot-alone "$(cat /tmp/keep/boot-v1)" "$(boot_state)"

# the upgrade, with the daemon running (as under dnf)
upgrade_root /mnt/root
manifest /mnt/root > /tmp/keep/root-v2
upgrade_boot
boot_state > /tmp/keep/boot-v2
check_ne upgrade-changed-boot "$(cat /tmp/keep/boot-v1)" "$(cat /tmp/keep/boot-v2)"
stop_daemon
umount /boot
umount /mnt/root
keep_save
