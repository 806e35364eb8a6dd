# Boot 5: the rest of a snapshot's life on the kernel backend. A COW nearly full is grown from
# the pool (its linear mapping extended and reloaded) while the volume is in use; Delete removes
# every device of the set and returns the volume to a plain mapping; a set that fails half-way
# leaves nothing behind and no origin suspended; devices left by a crashed daemon for sets the
# registry does not know are removed when it starts again. First, a disk that appears late at
# boot: activate waits for it (bounded), and assembles nothing if it never comes.
. /scenario/lib.sh
write_config
mv /dev/disk/var /dev/disk/var.late
check late-disk-times-out sh -c "! snapbackd activate --config /etc/snapback/snapback.toml --device-timeout 1 2>/tmp/late.err"
check late-disk-named grep -q '/dev/disk/var (volume var)' /tmp/late.err
check late-disk-nothing-assembled no_device 'snapback-'
(sleep 2; mv /dev/disk/var.late /dev/disk/var) &
check activate sh -c "snapbackd activate --config /etc/snapback/snapback.toml 2>/tmp/late.log"
wait
check late-disk-waited-for grep -q 'waiting up to 90 s for devices named in the configuration: /dev/disk/var (volume var)' /tmp/late.log
check late-disk-then-assembled has_device '^snapback-var[[:space:]]'
mount_vol root
start_bus
start_daemon
check start-daemon owns_name
size_of() { busctl get-property $BUS $SNAP/$1 $BUS.Snapshot SizeBytes | awk '{print $2}'; }

# grow: a 4 MiB COW of the unmounted var volume, filled with raw 512 KiB writes while the
# monitor watches (raw, because a mounted ext4 keeps writing on its own: lazy inode-table init)
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 var "grow me" 1 cow-size t 4194304)"
check_eq grow-set-path "o \"$SNAP/3\"" "$out"
check_eq grow-initial-size 4194304 "$(size_of 3)"
i=0
while [ $i -lt 10 ]; do   # 5 MiB of first writes: more than the first 4 MiB extent holds
  dd if=/dev/urandom of=/dev/mapper/snapback-var bs=512k count=1 seek=$i oflag=direct 2>/dev/null
  sleep 1; i=$((i + 1))
done
check grow-size-increased test "$(size_of 3)" -ge 8388608
check_eq grow-still-active active "$(state 3)"
check grow-cow-has-more-segments test "$(dm table snapback-var-3-cow | wc -l)" -ge 2
check_eq grow-kernel-sees-bigger-cow "$(($(size_of 3) / 512))" "$(dm status snapback-var-3 | awk '{split($4, a, "/"); print a[2]}')"
manifest /mnt/root > /tmp/with-grow

# delete: every device of the set goes, the volume is linear again, root's files untouched
check delete busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/3
check delete-object-gone no_object $SNAP/3
check delete-devices-gone no_device 'snapback-var-'
check_eq delete-var-linear linear "$(target_of var)"
check_eq delete-files-untouched "$(cat /tmp/with-grow)" "$(manifest /mnt/root)"

# a set that fails half-way: the COW name of its second volume is taken
dm create snapback-var-4-cow --table "0 8 error"
check set-failure-is-an-error sh -c "! busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 2 root var 'doomed' 0"
check_eq set-failure-root-still-linear linear "$(target_of root)"
check set-failure-root-not-suspended not_suspended snapback-root
check set-failure-var-not-suspended not_suspended snapback-var
check set-failure-nothing-left no_device 'snapback-root-|snapback-var-real'
check set-failure-no-object no_object $SNAP/4
check set-failure-root-writable sh -c "echo still-writable > /mnt/root/after-failure && sync"
dm remove snapback-var-4-cow
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 2 root var 'after the failure' 0)"
check_eq set-after-failure-gets-the-unused-id "o \"$SNAP/4\"" "$out"

# crash recovery: kill the daemon, leave a device of a set the registry never knew
kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
pool_uuid="$(dm info -c --noheadings -o uuid snapback-root | cut -d. -f2)"
dm create snapback-root-77-cow --uuid "SNAPBACK1.$pool_uuid.root.cow-77" --table "0 8 error"
dm create unrelated-device --table "0 8 error"
old_pid=$DAEMON_PID
start_daemon
check restart-after-crash owns_name
check_ne restarted-is-a-new-process "$old_pid" "$DAEMON_PID"
check stray-device-removed no_device 'snapback-root-77-cow'
check unrelated-device-kept has_device 'unrelated-device'
check_eq known-set-kept snapshot-origin "$(target_of root)"
check_eq known-set-active active "$(state 4)"
dm remove unrelated-device
check delete-set-4 busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/4
check_eq back-to-linear linear "$(target_of root)"
stop_daemon
umount /mnt/root
