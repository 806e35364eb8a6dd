# Boot 1: one write that reaches the disk (O_DIRECT), one that stays in the page cache,
# then the plug is pulled.
echo "durable-write" | dd of=/dev/disk/data bs=512 conv=sync oflag=direct 2>/dev/null
check_eq durable-write-read-back "durable-write" "$(head -c 13 /dev/disk/data)"
# the last close of a block device flushes it, so keep it open for the cached write to stay cached
exec 3</dev/disk/data
echo "cached-write" | dd of=/dev/disk/data bs=512 seek=8 conv=sync 2>/dev/null
mkdir -p /out && echo "from boot 1" > /out/note.txt
power_cut
echo "CHECK FAIL power-cut-stops-the-script: still running after power_cut"
