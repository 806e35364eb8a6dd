# Boot 2 (the same disks: a reboot). Boot 1 powered off with the data volume mounted from
# /etc/fstab (`nofail,x-systemd.requires=snapbackd.service`) and a write not yet synced. This boot:
# snapbackd, enabled, starts after /var/lib/snapback is mounted; the fstab mount comes after it,
# on the loop device it made; the file system was unmounted cleanly before the daemon stopped at
# the poweroff (the write is there, no journal recovery); nothing failed.
. /scenario/lib.sh
mkdir -p /out

check_eq system-running running "$(systemctl is-system-running)"
systemctl --no-pager --failed | sed 's/^/VM-INFO: /'
check_eq snapbackd-started-at-boot "enabled active userspace" \
  "$(systemctl is-enabled snapbackd) $(systemctl is-active snapbackd) $(busctl get-property $BUS $MGR $BUS.Manager Backend | cut -d'"' -f2)"
check state-mount-before-snapbackd in_order var-lib-snapback.mount snapbackd.service
check snapbackd-before-fstab-mount in_order snapbackd.service mnt-data.mount
data_dev="$(volume_device data)"
check_eq fstab-mount-at-boot "active $data_dev" \
  "$(systemctl is-active mnt-data.mount) $(awk '$2 == "/mnt/data" {print $1}' /proc/mounts)"
check_eq write-before-poweroff-kept "written just before poweroff" "$(cat /mnt/data/before-poweroff 2>&1)"
check_eq restart-proof-kept "written before the restart" "$(cat /mnt/data/restart-proof 2>&1)"
check_eq unmounted-cleanly-at-poweroff "" "$(dmesg | grep "EXT4-fs (${data_dev#/dev/})" | grep -i 'recovery\|orphan\|error' || true)"
check no-hardening-errors-in-journal no_hardening_errors snapbackd.service
check_eq no-errors-logged "" "$(journal_errors snapbackd.service)"
check_eq no-restarts 0 "$(prop snapbackd NRestarts)"

systemctl status --no-pager -n 40 snapbackd > /out/status-boot2.txt 2>&1 || true
journalctl -b --no-pager -o short-monotonic > /out/journal-boot2.txt 2>&1 || true
