# Boot 2, same disk: the O_DIRECT write survived, the cached one was lost with the power.
check_eq reboot-keeps-disk "durable-write" "$(head -c 13 /dev/disk/data)"
check_eq power-cut-loses-page-cache "" "$(dd if=/dev/disk/data bs=512 skip=8 count=1 2>/dev/null | tr -d '\000')"
check_eq boot-number "2" "$(sed -n 's/.*vm\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)"
echo "from boot 2" > /out/note.txt
