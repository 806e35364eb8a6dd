# Boot 2 (the same disks: a reboot) with set 2's rollback scheduled: snapback-activate.service
# starts the merge before local-fs-pre.target, systemd mounts the data volume from /etc/fstab
# as usual and it shows the pre-upgrade files at once; snapbackd (enabled, started at boot)
# follows the merge to the end and the volumes are plain linear mappings again.
. /scenario/lib.sh
keep_load
mkdir -p /out

check_eq system-running running "$(systemctl is-system-running)"
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
check_eq activate-succeeded "active success 0" \
  "$(prop snapback-activate ActiveState) $(prop snapback-activate Result) $(prop snapback-activate ExecMainStatus)"
check activate-before-local-fs-pre in_order snapback-activate.service local-fs-pre.target
check activate-started-merge-of-data sh -c \
  "journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapback-activate.service VOLUME=data MERGING=true | grep -q 'volume data assembled at /dev/mapper/snapback-data (merging)'"
check activate-started-pending-rollback sh -c \
  "journalctl -b -q --no-pager -o cat _SYSTEMD_UNIT=snapback-activate.service SNAPSHOT_ID=2 | grep -q 'pending rollback of snapshot set 2 started'"

# the fstab mount, ordered by systemd as any other
check_eq fstab-mount-active "active /etc/fstab" "$(systemctl is-active mnt-data.mount) $(prop mnt-data.mount SourcePath)"
check_eq fstab-mount-source /dev/mapper/snapback-data "$(awk '$2 == "/mnt/data" {print $1}' /proc/mounts)"
check mount-after-local-fs-pre in_order local-fs-pre.target mnt-data.mount
check mount-before-local-fs in_order mnt-data.mount local-fs.target
# what it showed at the instant it was mounted (mount-probe.service)
check_eq at-mount-merge-table snapshot-merge "$(awk '{print $3}' /run/probe/table)"
check at-mount-pre-upgrade-files same_manifest /tmp/keep/data-v2 /run/probe/manifest
set -- $(cat /run/probe/status)    # start len snapshot-merge allocated/total metadata
check at-mount-merge-still-running test "${4%/*}" -gt "$5"
figure at-mount-sectors-left-to-merge "$(( ${4%/*} - $5 ))" sectors
echo "VM-INFO: at mount: $(cat /run/probe/status)"

# snapbackd is not enabled this boot: nothing started it; a client's first call does
# (D-Bus activation), and it follows the merge to its end
check_eq enabled-state "disabled enabled" \
  "$(systemctl is-enabled snapbackd.service) $(systemctl is-enabled snapback-activate.service)"
check_eq snapbackd-not-started-at-boot inactive "$(systemctl is-active snapbackd)"
busctl --timeout=120 call $BUS $MGR $BUS.Manager Status > /tmp/status.out 2>&1 || true
check first-call-answers grep -q '"backend" s "kernel"' /tmp/status.out
check_eq snapbackd-activated "active running" "$(prop snapbackd ActiveState) $(prop snapbackd SubState)"
check_eq snapbackd-owns-bus-name "$(main_pid)" "$(bus_pid $BUS)"
check merge-finishes wait_gone 2 180
check journal-merge-finished-ok journal_has MESSAGE_ID=434d125d881e4dcd99ae6d046f431929 SNAPSHOT_ID=2 OK=true
check_eq data-back-to-linear "0 131072 linear $(majmin /dev/disk/data) 0" "$(dmsetup table snapback-data)"
check_eq logs-back-to-linear "0 65536 linear $(majmin /dev/disk/logs) 0" "$(dmsetup table snapback-logs)"
check_eq no-other-snapback-devices "snapback-data snapback-logs" "$(dmsetup ls | awk '{print $1}' | grep '^snapback-' | sort | tr '\n' ' ' | sed 's/ $//')"
n=0; until [ "$(prop snapbackd StatusText)" = "0 snapshot set(s)" ] || [ $n -ge 20 ]; do sleep 0.5; n=$((n + 1)); done
check_eq status-text-after-merge "0 snapshot set(s)" "$(prop snapbackd StatusText)"
check data-files-pre-upgrade-after-merge same_tree /tmp/keep/data-v2 /mnt/data
mkdir -p /mnt/logs; mount /dev/mapper/snapback-logs /mnt/logs
check logs-files-pre-upgrade same_tree /tmp/keep/logs-v2 /mnt/logs
umount /mnt/logs

# the "add" uevent systemd-udev-trigger sends every device at boot (e.g. to volumes an initramfs
# assembled) keeps the volume ready for systemd: the daemon's dm calls carry udev's
# primary-source flag, so the dm rules do not take the event for a half-made device
dmn="$(basename "$(readlink -f /dev/mapper/snapback-data)")"
udevadm trigger --action=add --settle "/sys/block/$dmn"
check_eq coldplug-add-keeps-device-and-mount "1 active active" \
  "$(udevadm info -q property "/dev/$dmn" | sed -n 's/^SYSTEMD_READY=//p') $(systemctl is-active 'dev-mapper-snapback\x2ddata.device') $(systemctl is-active mnt-data.mount)"

check no-hardening-errors-in-journal no_hardening_errors snapbackd.service
check no-activate-errors-in-journal no_hardening_errors snapback-activate.service
check no-ordering-cycle sh -c "! journalctl -b -q --no-pager | grep -i 'ordering cycle'"
check_eq no-restarts 0 "$(prop snapbackd NRestarts)"
systemctl status --no-pager -n 40 snapbackd > /out/status-boot2.txt 2>&1 || true
journalctl -b --no-pager -o short-monotonic > /out/journal-boot2.txt 2>&1 || true
