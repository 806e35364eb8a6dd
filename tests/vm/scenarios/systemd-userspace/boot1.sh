# Boot 1 of 2: snapbackd on the USERSPACE backend (engine + FUSE + loop devices) as installed by
# tools/install, under Debian's systemd 252 as PID 1 and every hardening setting of
# snapbackd.service. The administrator's steps are the README's ("The userspace backend under
# systemd"), typed on the running system: pool file and config, `snapbackd init`, the drop-in
# that picks the userspace backend, `systemctl enable --now snapbackd`. Then: loop devices
# visible outside the service, ext4 mounted outside, a snapshot while mounted (frozen by the
# daemon from inside its own mount namespace), rollback, a rollback scheduled while mounted
# that no restart merges under the mount, the merge after unmount + restart, a crash, the
# README's fstab mount across a restart, a clean stop; then the fstab mount left active with an
# unsynced write for the poweroff (boot 2 and host-after check what it left).
. /scenario/lib.sh
mkdir -p /out /tmp/keep

check_eq pid1-is-systemd /lib/systemd/systemd "$(readlink /proc/1/exe)"
check_eq modules-made-fuse-and-loop-control "c c" "$(stat -c %F /dev/fuse /dev/loop-control | sed 's/character special file/c/' | tr '\n' ' ' | sed 's/ $//')"
check_eq state-dir-is-the-fstab-mount "ext4 /etc/fstab" \
  "$(awk '$2 == "/var/lib/snapback" {print $3}' /proc/mounts) $(prop var-lib-snapback.mount SourcePath)"

# --- the administrator's steps (README, "The userspace backend under systemd")
dd if=/dev/zero of=/var/lib/snapback/pool bs=1M count=64 conv=fsync 2>/dev/null
fallocate -l 32M /var/lib/snapback/files.img
cp /scenario/snapback.toml /etc/snapback/snapback.toml   # written as README says
check admin-init sh -c "/usr/libexec/snapbackd init 2>/tmp/init.err"
check init-no-sparse-warning sh -c "! grep -q sparse /tmp/init.err"
mkdir -p /etc/systemd/system/snapbackd.service.d
cp /scenario/backend.conf /etc/systemd/system/snapbackd.service.d/backend.conf
# the kernel backend's early activation (enabled with snapbackd by Also=) must not assemble
# dm stacks over these volumes, and cannot use a pool file: masked
check admin-mask-activation systemctl mask snapback-activate.service
systemctl daemon-reload
t0="$(cut -d' ' -f1 /proc/uptime)"
check admin-enable-now systemctl enable --now snapbackd.service
t1="$(cut -d' ' -f1 /proc/uptime)"
figure enable-now-to-ready "$(echo "$t0 $t1" | awk '{printf "%d", ($2 - $1) * 1000}')" ms
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
check_eq system-running running "$(systemctl is-system-running)"

# --- snapbackd.service under its hardening, on the userspace backend
pid="$(main_pid)"
check_eq snapbackd-active-running "notify active running" \
  "$(prop snapbackd Type) $(prop snapbackd ActiveState) $(prop snapbackd SubState)"
check_eq backend-property 's "userspace"' "$(busctl get-property $BUS $MGR $BUS.Manager Backend)"
check_eq drop-in-in-use /etc/systemd/system/snapbackd.service.d/backend.conf "$(prop snapbackd DropInPaths)"
check_eq ordered-after-state-mount yes \
  "$(prop snapbackd RequiresMountsFor | tr ' ' '\n' | grep -qx /var/lib/snapback && prop snapbackd After | tr ' ' '\n' | grep -qx var-lib-snapback.mount && echo yes)"
check_eq hardening-settings \
  "strict yes yes yes closed cap_sys_admin cap_mknod AF_NETLINK AF_UNIX" \
  "$(for p in ProtectSystem ProtectHome PrivateTmp NoNewPrivileges DevicePolicy CapabilityBoundingSet RestrictAddressFamilies; do prop snapbackd $p; done | tr '\n' ' ' | sed 's/ $//')"
check_eq process-capability-bounding-set 0000000008200000 "$(sed -n 's/^CapBnd:\t//p' /proc/$pid/status)"
check_eq process-no-new-privs 1 "$(sed -n 's/^NoNewPrivs:\t//p' /proc/$pid/status)"
check_eq process-seccomp-filter 2 "$(sed -n 's/^Seccomp:\t//p' /proc/$pid/status)"
check_ne process-own-mount-namespace "$(readlink /proc/1/ns/mnt)" "$(readlink /proc/$pid/ns/mnt)"
check_eq process-root-read-only ro "$(awk '$5 == "/" {split($6, o, ","); print o[1]}' /proc/$pid/mountinfo | tail -n1)"
check_eq process-state-dir-writable rw "$(awk '$5 == "/var/lib/snapback" {split($6, o, ","); print o[1]}' /proc/$pid/mountinfo | tail -n1)"
check_eq process-runtime-dir-writable rw "$(awk '$5 == "/run/snapback" {split($6, o, ","); print o[1]}' /proc/$pid/mountinfo | tail -n1)"
check device-policy-allows-fuse in_unit_cgroup snapbackd.service sh -c ': <> /dev/fuse'
check device-policy-allows-loop-control in_unit_cgroup snapbackd.service sh -c ': <> /dev/loop-control'
check device-policy-refuses-unlisted unit_refuses_device snapbackd.service /dev/kmsg
# its FUSE mount: in its own namespace only
check_eq fuse-mounted-in-service-namespace "fuse snapback" "$(awk -v d=$FUSE_DIR '$5 == d {print $9, $10}' /proc/$pid/mountinfo)"
check_eq fuse-mount-invisible-outside "" "$(awk -v d=$FUSE_DIR '$5 == d' /proc/self/mountinfo)"

# --- a loop device per volume, reported by Status() and present outside the service
data_dev="$(volume_device data)"; files_dev="$(volume_device files)"
echo "VM-INFO: Status: $(status)"
echo "VM-INFO: data=$data_dev files=$files_dev; loops: $(fuse_loops | tr '\n' ';')"
losetup -a | sed 's/^/VM-INFO: losetup: /' || true
check_eq status-devices-are-loops "loop loop" "$(echo "$data_dev $files_dev" | sed 's#/dev/\(loop\)[0-9]*#\1#g')"
check_ne devices-differ "$data_dev" "$files_dev"
check data-device-exists-outside test -b "$data_dev"
check files-device-exists-outside test -b "$files_dev"
check_eq data-loop-backed-by-fuse-file "$FUSE_DIR/data" "$(backing_of "$data_dev")"
check_eq files-loop-backed-by-fuse-file "$FUSE_DIR/files" "$(backing_of "$files_dev")"
check_eq data-loop-size "$((64 << 20))" "$(blockdev --getsize64 "$data_dev")"

# --- ext4 made and mounted outside, a snapshot taken WHILE MOUNTED: the daemon freezes it
mkfs.ext4 -q -F -U $FS_UUID "$data_dev"
mkdir -p /mnt/data
mount "$data_dev" /mnt/data
tree /mnt/data data 4
manifest /mnt/data > /tmp/keep/v1
# made outside after the service started, the mount propagates into its namespace (systemd
# makes it a slave of the host's): that is where the daemon finds it to freeze it
check_eq mount-seen-in-service-namespace "ext4 $data_dev" "$(sed -n 's#^[^ ]* [^ ]* [^ ]* [^ ]* /mnt/data .* - \([^ ]*\) \([^ ]*\) .*#\1 \2#p' /proc/$pid/mountinfo)"
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 0 "before upgrade 1" 0 2>&1)"
check_eq snapshot-while-mounted "o \"$SNAP/1\"" "$out"
check snapshot-froze-one-filesystem froze_one 1
echo "VM-INFO: set 1: $(journalctl -b -q --no-pager -o verbose _SYSTEMD_UNIT=snapbackd.service SNAPSHOT_ID=1 | grep -E 'FROZEN|SUSPENDED' | tr -d ' ' | tr '\n' ' ')"
check_eq snapshot-logged-no-error "" "$(journal_errors snapbackd.service)"
check_eq snapshot-no-freeze-warning "" "$(journalctl -b -q --no-pager -u snapbackd | grep -i 'could not freeze\|could not thaw' || true)"
check still-writable-after-thaw sh -c 'echo thawed > /mnt/data/thawed && rm /mnt/data/thawed && sync'

upgrade /mnt/data 4 20
check files-changed tree_differs /tmp/keep/v1 /mnt/data
umount /mnt/data
check_eq rollback-unmounted-merges 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0 2>&1)"
check merge-finishes wait_gone 1 60
mount "$data_dev" /mnt/data
check tree-as-at-snapshot same_tree /tmp/keep/v1 /mnt/data
# losetup, fsfreeze (freeze and thaw) and blockdev --flushbufs all ran as the daemon's children
# under its confinement without a single warning
check_eq no-warnings-so-far "" "$(journalctl -b -q --no-pager -p warning _SYSTEMD_UNIT=snapbackd.service)"
check journal-merge-finished-ok journal_has MESSAGE_ID=434d125d881e4dcd99ae6d046f431929 SNAPSHOT_ID=1 OK=true

# --- a rollback while mounted is scheduled; a restart while still mounted does not merge it
upgrade /mnt/data 2 8
manifest /mnt/data > /tmp/keep/v2
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 0 "before upgrade 2" 0 2>&1)"
check_eq snapshot-2-while-mounted "o \"$SNAP/2\"" "$out"
check snapshot-2-froze-one-filesystem froze_one 2
upgrade /mnt/data 3 16
check files-changed-2 tree_differs /tmp/keep/v2 /mnt/data
check_eq rollback-mounted-is-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0 2>&1)"
check_eq state-merge-scheduled merge-scheduled "$(state 2)"
old_dev="$data_dev"
pid="$(main_pid)"
t0="$(cut -d' ' -f1 /proc/uptime)"
rc=0; systemctl restart snapbackd || rc=$?
t1="$(cut -d' ' -f1 /proc/uptime)"
figure restart-while-mounted "$(echo "$t0 $t1" | awk '{printf "%d", ($2 - $1) * 1000}')" ms
check_eq restart-while-mounted-succeeds 0 "$rc"
check restarted-active wait_active
check_ne restarted-new-process "$pid" "$(main_pid)"
# the service's mount namespace went with the old process, and its FUSE mount with it: the old
# loop device (still under /mnt/data) now names its file from the detached mount's root
check_eq old-loop-still-mounted "$old_dev /mnt/data" "$(awk '$2 == "/mnt/data" {print $1, $2}' /proc/mounts)"
check_eq old-loop-backing-seen-detached "/data 1" "$(backing_of "$old_dev") $(cat /sys/block/${old_dev#/dev/}/loop/autoclear)"
check_eq still-scheduled-after-restart-while-mounted merge-scheduled "$(state 2)"
check journal-says-stays-scheduled sh -c "journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapbackd.service SNAPSHOT_ID=2 | grep -q 'rollback of snapshot set 2 stays scheduled: volumes still mounted from before this start'"
data_dev="$(volume_device data)"
check_ne new-device-for-data "$old_dev" "$data_dev"
check_eq new-device-backed-by-new-fuse-mount "$FUSE_DIR/data" "$(backing_of "$data_dev")"
echo "VM-INFO: after restart: old $old_dev new $data_dev; $(journalctl -b -q --no-pager -o cat -u snapbackd | grep -i 'still in use' | tail -n 2 | tr '\n' ' ')"
# the old mount's daemon is gone: what it shows now is whatever the page cache held
ls /mnt/data/usr/lib/app > /tmp/ls.out 2>&1 || true; echo "VM-INFO: old mount after restart: $(tr '\n' ' ' < /tmp/ls.out)"

# --- unmounted: the old device goes, and the next restart merges the set
umount /mnt/data
n=0; while [ -e "/sys/block/${old_dev#/dev/}/loop/backing_file" ] && [ $n -lt 20 ]; do sleep 0.25; n=$((n + 1)); done
check_eq old-loop-released-at-unmount "" "$(backing_of "$old_dev")"
rc=0; systemctl restart snapbackd || rc=$?
check_eq restart-unmounted-succeeds 0 "$rc"
check restarted-again-active wait_active
check scheduled-merge-runs-after-restart wait_gone 2 60
check journal-pending-merge-finished-ok journal_has MESSAGE_ID=434d125d881e4dcd99ae6d046f431929 SNAPSHOT_ID=2 OK=true
data_dev="$(volume_device data)"
mount "$data_dev" /mnt/data
check tree-as-at-snapshot-2 same_tree /tmp/keep/v2 /mnt/data
umount /mnt/data

# --- a crash (nothing mounted): systemd restarts it, and the new instance detaches the loop
#     devices the dead one left (found from outside its gone namespace)
pid="$(main_pid)"; before="$(fuse_loops | awk '{print $1}' | sort | tr '\n' ' ')"
kill -KILL "$pid"
n=0
until [ "$(prop snapbackd NRestarts)" = 1 ] && wait_active >/dev/null 2>&1; do
  sleep 0.5; n=$((n + 1)); [ $n -lt 60 ] || break
done
check_eq restarted-after-crash "1 active" "$(prop snapbackd NRestarts) $(systemctl is-active snapbackd)"
check_eq crash-left-no-loop-device "" \
  "$(for l in /sys/block/loop*/loop/backing_file; do [ -e "$l" ] && case "$(cat "$l")" in "$FUSE_DIR"/*) ;; *) echo "$l: $(cat "$l")" ;; esac; done)"
check_eq two-loop-devices-after-crash 2 "$(fuse_loops | wc -l)"
check journal-detached-crash-leftovers journal_line snapbackd.service "detached a loop device left by an earlier snapbackd"
echo "VM-INFO: loops before crash: $before; after: $(fuse_loops | tr '\n' ';')"

# --- the README's way to mount a userspace volume under systemd: /etc/fstab by UUID (loop
#     device numbers change), nofail + x-systemd.requires=snapbackd.service. The mount is
#     ordered after the daemon, so it is unmounted before the daemon stops (poweroff too), and
#     a restart of the daemon unmounts it first and mounts it again on the new loop device
echo "UUID=$FS_UUID /mnt/data ext4 nofail,x-systemd.requires=snapbackd.service 0 0" >> /etc/fstab
systemctl daemon-reload
check fstab-mount-starts systemctl start mnt-data.mount
data_dev="$(volume_device data)"
check_eq fstab-mount-on-the-volume "$data_dev" "$(awk '$2 == "/mnt/data" {print $1}' /proc/mounts)"
check_eq fstab-mount-after-and-requires-snapbackd "yes yes" \
  "$(prop mnt-data.mount After | tr ' ' '\n' | grep -qx snapbackd.service && echo yes) $(prop mnt-data.mount Requires | tr ' ' '\n' | grep -qx snapbackd.service && echo yes)"
echo "written before the restart" > /mnt/data/restart-proof   # left in the page cache, not synced
ioerr="$(dmesg | grep -c 'I/O error' || true)"
rc=0; systemctl restart snapbackd || rc=$?
check_eq restart-with-fstab-mount-succeeds 0 "$rc"
check restarted-with-fstab-mount-active wait_active
n=0; until [ "$(systemctl is-active mnt-data.mount)" = active ] || [ $n -ge 60 ]; do sleep 0.5; n=$((n + 1)); done
new_dev="$(volume_device data)"
check_eq fstab-mount-back-on-the-new-device "active $new_dev" "$(systemctl is-active mnt-data.mount) $(awk '$2 == "/mnt/data" {print $1}' /proc/mounts)"
check_eq unsynced-write-survived-the-restart "written before the restart" "$(cat /mnt/data/restart-proof 2>&1)"
check_eq no-io-errors-across-the-restart "$ioerr" "$(dmesg | grep -c 'I/O error' || true)"
check_eq no-old-device-left "$new_dev" "$(fuse_loops | awk '$2 == "'$FUSE_DIR'/data" {print "/dev/" $1}')"
# (the one stale device of the restart while mounted above, and no other)
check_eq no-device-left-in-use 1 "$(journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapbackd.service | grep -c 'still in use from before' || true)"
check fstab-mount-stops systemctl stop mnt-data.mount

# --- the journal: no confinement errors
check no-hardening-errors-in-journal no_hardening_errors snapbackd.service
check_eq no-errors-logged "" "$(journal_errors snapbackd.service)"

# --- stop with nothing mounted: loop devices detached, clean exit
t0="$(cut -d' ' -f1 /proc/uptime)"
systemctl stop snapbackd
t1="$(cut -d' ' -f1 /proc/uptime)"
figure stop "$(echo "$t0 $t1" | awk '{printf "%d", ($2 - $1) * 1000}')" ms
check_eq stopped "inactive success" "$(systemctl is-active snapbackd) $(prop snapbackd Result)"
# exited by itself with status 0 (CLD_EXITED = 1), not killed after TimeoutStopSec
check_eq exited-cleanly "1 0" "$(prop snapbackd ExecMainCode) $(prop snapbackd ExecMainStatus)"
check no-stop-timeout sh -c "! journalctl -b -q --no-pager -u snapbackd | grep -Ei 'stop-sigterm.*timed out|with signal SIGKILL'"
check_eq no-loop-left "" "$(fuse_loops)"
check_eq no-stale-loop-left "" "$(for l in /sys/block/loop*/loop/backing_file; do [ -e "$l" ] && echo "$l: $(cat "$l")"; done)"
losetup -a | sed 's/^/VM-INFO: losetup after stop: /' || true

# --- for boot 2: starting the fstab mount starts the daemon (Requires=); a write left unsynced
#     in the page cache, and the machine powered off (the harness's poweroff) with it mounted.
#     The mount is ordered after snapbackd, so systemd unmounts it before it stops the daemon.
check fstab-mount-starts-the-daemon systemctl start mnt-data.mount
check_eq daemon-started-by-the-mount "active active" "$(systemctl is-active snapbackd) $(systemctl is-active mnt-data.mount)"
echo "written just before poweroff" > /mnt/data/before-poweroff

systemctl status --no-pager -n 60 snapbackd > /out/status-boot1.txt 2>&1 || true
journalctl -b --no-pager -o short-monotonic > /out/journal-boot1.txt 2>&1 || true
