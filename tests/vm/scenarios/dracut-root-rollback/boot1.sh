# Boot 1 (the harness's initramfs): "/" of a small system on a snapback volume — busybox and an
# init that checks the tree — snapshot, "upgrade" it, roll back while it is mounted: scheduled.
# host-after-boot1 then boots it through an initramfs built by dracut with our module, with
# root=/dev/mapper/snapback-root: the merge must start there, before root is mounted.
. /snapback/snapbackd-lib.sh
need_bin snapbackd
mkdir -p /etc/snapback; cp /scenario/snapback.toml /etc/snapback/snapback.toml
check init-pool snapbackd init --config /etc/snapback/snapback.toml
check activate snapbackd activate --config /etc/snapback/snapback.toml
mkfs.ext4 -q -F /dev/mapper/snapback-root
mkdir -p /mnt/root; mount -t ext4 /dev/mapper/snapback-root /mnt/root
r=/mnt/root
mkdir -p $r/bin $r/sbin $r/proc $r/sys $r/dev $r/etc/app $r/usr/lib/app
cp /bin/busybox $r/bin/busybox
cp /scenario/rootfs-init $r/sbin/init; chmod 0755 $r/sbin/init
echo "release 1" > $r/etc/release; chmod 0640 $r/etc/release
i=0; while [ $i -lt 50 ]; do echo "setting $i" > $r/etc/app/conf$i; i=$((i + 1)); done
dd if=/dev/urandom of=$r/usr/lib/app/libapp.so.1 bs=1M count=6 2>/dev/null
ln -s libapp.so.1 $r/usr/lib/app/libapp.so
(cd $r && find etc usr | sort | while read -r p; do
  if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
  elif [ -f "$p" ]; then echo "F $p $(stat -c '%s %a %u:%g' "$p") $(sha256sum < "$p" | cut -c1-64)"
  elif [ -d "$p" ]; then echo "D $p $(stat -c '%a %u:%g' "$p")"; fi
done) > $r/expected-manifest
sync

start_bus
start_daemon
check start-daemon owns_name
check_eq snapshot 'o "/org/snapback/Snapback1/snapshot/1"' \
  "$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 0 "before upgrade" 0)"
echo "release 2 (broken)" > $r/etc/release
rm $r/etc/app/conf7
dd if=/dev/urandom of=$r/usr/lib/app/libapp.so.2 bs=1M count=8 2>/dev/null
ln -sf libapp.so.2 $r/usr/lib/app/libapp.so
echo upgraded > $r/UPGRADED
sync
check_eq rollback-of-mounted-root-is-scheduled 's "scheduled"' \
  "$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/1 0)"
stop_daemon
umount /mnt/root
