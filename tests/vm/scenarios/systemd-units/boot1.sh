# Boot 1: the units as installed, run by systemd 252 as PID 1 (prepare.sh: config with a pool
# and two volumes, `snapbackd init`, `systemctl enable snapbackd`). Early activation before
# local-fs-pre.target; snapbackd under all its hardening as Type=notify with STATUS= and the
# watchdog; D-Bus activation through SystemdService=; snapshot / rollback over busctl on the
# kernel's dm; a rollback of a mounted volume is scheduled for boot 2; the journal by MESSAGE_ID;
# no confinement errors; polkit refuses an unprivileged caller.
. /scenario/lib.sh
mkdir -p /tmp/keep /out

check_eq pid1-is-systemd /lib/systemd/systemd "$(readlink /proc/1/exe)"
check root-is-not-an-initrd test ! -e /etc/initrd-release
check_eq system-running running "$(systemctl is-system-running)"
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
# README: `systemctl enable snapbackd` — which must enable the early activation too, or a
# daemon started only on demand leaves fstab's snapback volumes unassembled at boot
check_eq enabled-by-readme-step "enabled enabled" \
  "$(systemctl is-enabled snapbackd.service) $(systemctl is-enabled snapback-activate.service)"

# --- snapback-activate.service: ran at boot, before local-fs-pre.target, assembled both volumes
check_eq activate-succeeded "active success 0" \
  "$(prop snapback-activate ActiveState) $(prop snapback-activate Result) $(prop snapback-activate ExecMainStatus)"
check activate-before-local-fs-pre in_order snapback-activate.service local-fs-pre.target
check activate-before-snapbackd in_order snapback-activate.service snapbackd.service
check_eq activate-printed-the-devices "/dev/mapper/snapback-data /dev/mapper/snapback-logs" \
  "$(journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapback-activate.service | grep '^/dev/mapper/' | sort | tr '\n' ' ' | sed 's/ $//')"
check_eq data-is-linear-over-its-disk "0 131072 linear $(majmin /dev/disk/data) 0" "$(dmsetup table snapback-data)"
check_eq logs-is-linear-over-its-disk "0 65536 linear $(majmin /dev/disk/logs) 0" "$(dmsetup table snapback-logs)"
# its confinement as systemd reports it: what fits a unit before local-fs-pre.target (no
# PrivateTmp=, no device policy: the unit file says why)…
check_eq activate-hardening-settings \
  "strict yes yes cap_sys_admin cap_mknod AF_UNIX yes yes yes auto no no" \
  "$(for p in ProtectSystem ProtectHome NoNewPrivileges CapabilityBoundingSet RestrictAddressFamilies PrivateNetwork PrivateMounts ProtectKernelTunables DevicePolicy PrivateTmp PrivateDevices; do prop snapback-activate $p; done | tr '\n' ' ' | sed 's/ $//')"
check_eq activate-syscall-filter-has-mknod mknodat \
  "$(prop snapback-activate SystemCallFilter | tr ' ' '\n' | grep -x 'mknodat\|mount')"
# …and in force inside it (activate-probe.sh, an ExecStartPost= of the unit: same settings)
n=0
until probe="$(journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapback-activate.service | sed -n 's/^activate-probe //p' | tail -n1)" &&
      [ -n "$probe" ] || [ $n -ge 20 ]; do sleep 0.5; n=$((n + 1)); done
echo "VM-INFO: inside snapback-activate.service: $probe"
field() { echo "$probe" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
check home-readable-outside ls /root
check_eq activate-process-confinement \
  "0000000008200000 1 2 read-only hidden opens" \
  "$(for f in CapBnd NoNewPrivs Seccomp root home dm-control; do field $f; done | tr '\n' ' ' | sed 's/ $//')"
check_ne activate-own-mount-namespace "$(readlink /proc/1/ns/mnt)" "$(field mnt)"
check_ne activate-own-network-namespace "$(readlink /proc/1/ns/net)" "$(field net)"
check no-activate-errors-in-journal no_hardening_errors snapback-activate.service
check no-ordering-cycle sh -c "! journalctl -b -q --no-pager | grep -i 'ordering cycle'"
# udev saw the cookie-less dm devices: the /dev/mapper link and a .device unit systemd can
# order mounts after (boot 2's fstab entry needs it)
check_eq data-device-unit active "$(systemctl is-active 'dev-mapper-snapback\x2ddata.device')"

# --- snapbackd.service: Type=notify, ready, STATUS=, watchdog, bus name, every confinement
pid="$(main_pid)"
check_eq snapbackd-active-running "notify active running" \
  "$(prop snapbackd Type) $(prop snapbackd ActiveState) $(prop snapbackd SubState)"
check_eq snapbackd-status-text "0 snapshot set(s)" "$(prop snapbackd StatusText)"
check_eq snapbackd-watchdog-30s 30s "$(prop snapbackd WatchdogUSec)"
check_eq snapbackd-gets-watchdog-usec WATCHDOG_USEC=30000000 "$(tr '\0' '\n' < /proc/$pid/environ | grep '^WATCHDOG_USEC=')"
check_eq snapbackd-owns-bus-name "$pid" "$(bus_pid $BUS)"
check_eq snapbackd-bus-name-property org.snapback.Snapback1 "$(prop snapbackd BusName)"
check_eq snapbackd-unit-is-the-installed-one /usr/lib/systemd/system/snapbackd.service "$(prop snapbackd FragmentPath)"
check_eq hardening-settings \
  "strict yes yes yes closed cap_sys_admin cap_mknod AF_NETLINK AF_UNIX" \
  "$(for p in ProtectSystem ProtectHome PrivateTmp NoNewPrivileges DevicePolicy CapabilityBoundingSet RestrictAddressFamilies; do prop snapbackd $p; done | tr '\n' ' ' | sed 's/ $//')"
# (char-rtc r comes from ProtectClock=yes)
check_eq hardening-device-allow-list \
  "/dev/fuse rw,/dev/loop-control rw,/dev/mapper/control rw,block-* rwm,char-rtc r" \
  "$(prop snapbackd DeviceAllow | sort | tr '\n' ',' | sed 's/,$//')"
check_eq hardening-syscall-filter-has-mount-and-mknod "mknodat mount" \
  "$(prop snapbackd SystemCallFilter | tr ' ' '\n' | grep -x 'mknodat\|mount' | sort | tr '\n' ' ' | sed 's/ $//')"
# …and in force on the running process
check_eq process-capability-bounding-set 0000000008200000 "$(sed -n 's/^CapBnd:\t//p' /proc/$pid/status)"
check_eq process-no-new-privs 1 "$(sed -n 's/^NoNewPrivs:\t//p' /proc/$pid/status)"
check_eq process-seccomp-filter 2 "$(sed -n 's/^Seccomp:\t//p' /proc/$pid/status)"
check_ne process-own-mount-namespace "$(readlink /proc/1/ns/mnt)" "$(readlink /proc/$pid/ns/mnt)"
# the device policy: in the unit's cgroup a device it does not list is refused, listed ones open
check kmsg-opens-outside-the-unit sh -c ": < /dev/kmsg"
check device-policy-refuses-unlisted unit_refuses_device snapbackd.service /dev/kmsg
check device-policy-allows-dm-control in_unit_cgroup snapbackd.service sh -c ': <> /dev/mapper/control'
check device-policy-allows-block in_unit_cgroup snapbackd.service sh -c ': < /dev/disk/data'
# in its namespace / is read-only and /var/lib/snapback writable (ProtectSystem=strict + StateDirectory)
check_eq process-root-read-only ro "$(awk '$5 == "/" {split($6, o, ","); print o[1]}' /proc/$pid/mountinfo | tail -n1)"
check_eq process-state-dir-writable rw "$(awk '$5 == "/var/lib/snapback" {split($6, o, ","); print o[1]}' /proc/$pid/mountinfo | tail -n1)"
check process-private-tmp sh -c "awk '\$5 == \"/tmp\" {print \$4}' /proc/$pid/mountinfo | grep -q '/systemd-private-.*-snapbackd.service-.*/tmp'"

# --- D-Bus activation: stopped, a method call starts it through systemd (SystemdService=)
systemctl stop snapbackd
check_eq stopped inactive "$(systemctl is-active snapbackd)"
check_eq name-released "b false" "$(name_has_owner $BUS)"
check bus-knows-activatable-name sh -c "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ListActivatableNames | grep -q '\"$BUS\"'"
t0="$(cut -d' ' -f1 /proc/uptime)"
busctl --timeout=120 call $BUS $MGR $BUS.Manager Status > /tmp/activation.out 2>&1 || true
t1="$(cut -d' ' -f1 /proc/uptime)"
check activation-call-answers grep -q '"backend" s "kernel"' /tmp/activation.out
figure dbus-activation-to-answer "$(echo "$t0 $t1" | awk '{printf "%d", ($2 - $1) * 1000}')" ms
check_eq activated-unit-running "active running" "$(prop snapbackd ActiveState) $(prop snapbackd SubState)"
pid2="$(main_pid)"
check_ne activated-new-process "$pid" "$pid2"
check_eq activated-owns-name "$pid2" "$(bus_pid $BUS)"
check dbus-activated-through-systemd journal_line dbus.service \
  "Activating via systemd: service name='$BUS' unit='snapbackd.service'"

# --- a second instance started by hand refuses (the name is taken) and touches nothing
rc=0; /usr/libexec/snapbackd > /tmp/second.log 2>&1 || rc=$?
check_ne second-instance-exits-with-error 0 "$rc"
check second-instance-says-why grep -qi 'already owned' /tmp/second.log
check_eq service-unaffected-by-second-instance "$pid2 active" "$(main_pid) $(systemctl is-active snapbackd)"

# --- the kernel's dm under the confinement: ext4, snapshot, change, rollback while unmounted
mkfs.ext4 -q -F /dev/mapper/snapback-data
mkfs.ext4 -q -F /dev/mapper/snapback-logs
mkdir -p /mnt/data /mnt/logs
mount /dev/mapper/snapback-data /mnt/data
tree /mnt/data data 8
manifest /mnt/data > /tmp/keep/data-v1
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data "before upgrade 1" 0)"
check_eq snapshot-over-dbus "o \"$SNAP/1\"" "$out"
check_eq origin-is-snapshot-origin snapshot-origin "$(target_of data)"
upgrade /mnt/data 6
check files-changed tree_differs /tmp/keep/data-v1 /mnt/data
umount /mnt/data
check_eq rollback-unmounted-merges 's "merging"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
check merge-finishes wait_gone 1 120
check_eq back-to-linear linear "$(target_of data)"
mount /dev/mapper/snapback-data /mnt/data
check files-as-before-after-rollback same_tree /tmp/keep/data-v1 /mnt/data
check journal-snapshot-created journal_has MESSAGE_ID=f2ac8f71a2f6497e9b58ec2833fad94f SNAPSHOT_ID=1
check journal-merge-finished-ok journal_has MESSAGE_ID=434d125d881e4dcd99ae6d046f431929 SNAPSHOT_ID=1 OK=true

# --- rollback of mounted volumes is scheduled (left for boot 2, whose fstab mounts data)
mount /dev/mapper/snapback-logs /mnt/logs
tree /mnt/logs logs 2
manifest /mnt/data > /tmp/keep/data-v2; manifest /mnt/logs > /tmp/keep/logs-v2
out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 2 data logs "before upgrade 2" 0)"
check_eq snapshot-two-volumes "o \"$SNAP/2\"" "$out"
upgrade /mnt/data 24 60; upgrade /mnt/logs 2
manifest /mnt/data > /tmp/keep/data-v3
check upgraded sh -c '! cmp -s /tmp/keep/data-v2 /tmp/keep/data-v3'
check_eq rollback-mounted-is-scheduled 's "scheduled"' "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/2 0)"
check_eq state-merge-scheduled merge-scheduled "$(state 2)"
check journal-snapshot-2-created journal_has MESSAGE_ID=f2ac8f71a2f6497e9b58ec2833fad94f SNAPSHOT_ID=2
check journal-rollback-scheduled journal_has MESSAGE_ID=232e5b9c367b440f8372d816dfe6b0f1 SNAPSHOT_ID=2
n=0; until [ "$(prop snapbackd StatusText)" = "1 snapshot set(s), 1 rollback(s) pending" ] || [ $n -ge 20 ]; do sleep 0.5; n=$((n + 1)); done
check_eq status-text-shows-pending "1 snapshot set(s), 1 rollback(s) pending" "$(prop snapbackd StatusText)"

# --- polkit (bus-activated polkit.service, its own user) refuses an unprivileged caller
as_nobody() { su -s /bin/sh nobody -c "$*"; }
rc=0; as_nobody "busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data 'not allowed' 0" > /tmp/nobody.out 2>&1 || rc=$?
echo "VM-INFO: unprivileged Snapshot: rc=$rc $(grep -v '^+' /tmp/nobody.out)"
check_ne unprivileged-snapshot-refused 0 "$rc"
check unprivileged-refusal-is-about-authorization grep -qi 'authori' /tmp/nobody.out
check_eq polkit-bus-activated-as-polkitd "active polkitd" "$(systemctl is-active polkit) $(stat -c %U /proc/"$(prop polkit MainPID)")"
check unprivileged-can-read as_nobody "busctl get-property $BUS $MGR $BUS.Manager Backend"
check_eq no-set-made-by-refused-call "$SNAP/2" \
  "$(busctl call $BUS $MGR org.freedesktop.DBus.ObjectManager GetManagedObjects | grep -o "\"$SNAP/[0-9]*\"" | sort -u | tr -d '"' | tr '\n' ' ' | sed 's/ $//')"

# --- the watchdog is fed: systemd saw a WATCHDOG=1 about half the interval (15 s) after start
start="$(prop snapbackd ExecMainStartTimestampMonotonic)"
while wd="$(prop snapbackd WatchdogTimestampMonotonic)" && [ $((wd - start)) -lt 14000000 ] &&
      [ "$(awk '{printf "%d", $1 * 1000000}' /proc/uptime)" -lt $((start + 40000000)) ]; do
  sleep 1
done
check watchdog-pinged-after-15s test "$((wd - start))" -ge 14000000
figure watchdog-last-ping-after-start "$(((wd - start) / 1000))" ms

# --- no confinement errors, no watchdog trouble, no restarts so far
check no-hardening-errors-in-journal no_hardening_errors snapbackd.service
check no-hardening-errors-in-status sh -c "! systemctl status --no-pager -n 1000 snapbackd | grep -Ei 'Permission denied|Operation not permitted|EPERM'"
check no-watchdog-timeout sh -c "! journalctl -b -q --no-pager -u snapbackd | grep -qi 'watchdog timeout'"
check_eq no-restarts 0 "$(prop snapbackd NRestarts)"

# --- a crash: systemd restarts it (Restart=on-failure); the scheduled rollback stays scheduled
#     under the mounted volumes, as a whole
pid="$(main_pid)"
kill -KILL "$pid"
n=0
until [ "$(prop snapbackd NRestarts)" = 1 ] && [ "$(systemctl is-active snapbackd)" = active ] &&
      [ -n "$(bus_pid $BUS)" ]; do
  sleep 0.5; n=$((n + 1)); [ $n -lt 60 ] || break
done
check_eq restarted-after-crash "1 active" "$(prop snapbackd NRestarts) $(systemctl is-active snapbackd)"
check_ne restarted-new-process "$pid" "$(main_pid)"
check_eq restarted-owns-name "$(main_pid)" "$(bus_pid $BUS)"
check_eq still-scheduled-after-restart merge-scheduled "$(state 2)"
check_eq volumes-untouched-after-restart "snapshot-origin snapshot-origin" "$(target_of data) $(target_of logs)"
check no-hardening-errors-after-restart no_hardening_errors snapbackd.service

systemctl status --no-pager -n 40 snapbackd > /out/status-boot1.txt 2>&1 || true
journalctl -b --no-pager -o short-monotonic > /out/journal-boot1.txt 2>&1 || true
umount /mnt/logs
keep_save
