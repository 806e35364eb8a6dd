# The boot side under the shipped snapbackd.service (ProtectSystem=strict): a Snapshot of the
# root volume writes its "Roll back" entry and the kept kernel copy on the ESP (/boot/efi, a
# mount of its own below /boot), and a Rollback puts back the kernels and the default on both
# /boot and the ESP. Without ReadWritePaths= for them the unit's namespace has them read-only:
# no entry, and a rollback whose boot files cannot be put back.
. /snapback/systemd-lib.sh
mkdir -p /out
sha() { sha256sum < "$1" | cut -c1-64; }
call() { _m="$1"; shift; busctl --timeout=120 call $BUS $MGR $BUS.Manager "$_m" "$@"; }
check_eq snapbackd-active active "$(systemctl is-active snapbackd)"
check_eq snapshot-1 "o \"$SNAP/1\"" "$(call Snapshot 'assa{sv}' 1 data "before upgrade" 0)"
e=/boot/efi/loader/entries/snapback-rollback-1.conf
check rollback-entry-written-on-esp test -f $e
kept="$(sed -n "s/^linux //p" $e 2>/dev/null || true)"
check_eq rollback-entry-boots-a-kept-copy "/snapback/$(sha /boot/efi/probe/6.0/linux | cut -c1-16)/linux" "$kept"
check_eq kept-copy-is-the-kernel "$(sha /boot/efi/probe/6.0/linux)" "$(sha "/boot/efi$kept" 2>/dev/null)"

# the "upgrade": a new kernel on /boot and on the ESP, the ESP's default switched to it, the old
# kernel at the top of /boot rewritten
echo "kernel image 6.1" > /boot/vmlinuz-6.1-probe
echo "rebuilt" >> /boot/vmlinuz-6.0-probe
mkdir -p /boot/efi/probe/6.1
echo "kernel image 6.1 on the ESP" > /boot/efi/probe/6.1/linux
printf 'title Probe 6.1\nversion 6.1\nlinux /probe/6.1/linux\noptions root=/dev/mapper/snapback-data ro\n' \
  > /boot/efi/loader/entries/probe-6.1.conf
sed -i 's/^default .*/default probe-6.1.conf/' /boot/efi/loader/loader.conf
sync
# the volume is not mounted: the merge starts at once, and the boot files are put back now
rc=0; out="$(call Rollback 'oa{sv}' $SNAP/1 0 2>/tmp/rollback.err)" || rc=$?
check_eq rollback-merging "0 s \"merging\"" "$rc $out"
grep -v '^+' /tmp/rollback.err | sed 's/^/VM-INFO: Rollback: /' || true
check_eq boot-kernel-put-back "kernel image 6.0" "$(cat /boot/vmlinuz-6.0-probe)"
check upgrade-kernel-removed-from-boot test ! -e /boot/vmlinuz-6.1-probe
check_eq esp-default-put-back "default probe-6.0.conf" "$(grep '^default' /boot/efi/loader/loader.conf)"
check upgrade-entry-removed-from-esp test ! -e /boot/efi/loader/entries/probe-6.1.conf
check upgrade-kernel-removed-from-esp test ! -e /boot/efi/probe/6.1/linux
check merge-finishes wait_gone 1 60
check rollback-entry-removed-with-set test ! -e $e
check_eq kept-copies-pruned "" "$(find /boot/efi/snapback -type f 2>/dev/null)"
check no-read-only-errors sh -c "! journalctl -b -q --no-pager -o verbose -u snapbackd | grep -i 'read-only file system'"
check no-hardening-errors no_hardening_errors snapbackd.service
journalctl -b -q --no-pager -u snapbackd | tail -n 12 | sed 's/^/VM-INFO: /'
