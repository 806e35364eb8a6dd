# Boot 2: snapbackd activate assembles the volume and runs the scheduled merge at boot; the files
# are those from before the second snapshot.
. /scenario/daemon.sh
start_bus
check daemon-activate snapbackd activate --config /etc/snapback.toml
start_daemon
dev="$(volume_device data)"
n=0   # the merge started at activate; the set disappears when it is done
while snapbackctl list --json | grep -q '"id"'; do
  n=$((n + 1)); [ $n -lt 600 ] || break; sleep 0.2
done
check_eq no-set-left-after-merge "" "$(snapbackctl list --json | grep -o '"id"')"
mount -t ext4 -o ro "$dev" /mnt
check_eq files-back-after-merge-at-boot "$(cat /in/before2.sums)" "$(tree_sums)"
umount /mnt
stop_daemon
sed 's/^/VM-INFO: daemon: /' /tmp/snapbackd.log
