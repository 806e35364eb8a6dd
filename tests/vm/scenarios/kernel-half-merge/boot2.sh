# Boot 2: a's disk repaired. `snapbackd activate` (the boot path) loads both half-merged sets
# as snapshot-merge again; the daemon follows both merges to the end; every volume then holds
# exactly the data it had when the snapshot was taken.
. /scenario/lib.sh
dm create slowpool --table "$(pool_table 0)"
dm create vback-a --table "$(backing_table_healthy)"
write_config; keep_load
check activate snapbackd activate --config /etc/snapback/snapback.toml
for v in a b c; do check_eq "$v-merging-after-activate" snapshot-merge "$(target_of $v)"; done
check no-snapshot-device-for-c no_device '^snapback-c-2[[:space:]]'
start_bus
start_daemon
check start-daemon owns_name
check set-1-merges wait_gone 1 300
check set-2-merges wait_gone 2 300
for v in a b c; do check_eq "$v-linear" linear "$(target_of $v)"; done
check no-leftover-devices no_device 'snapback-(a|b|c)-'
stop_daemon
for v in a b; do
  check_eq "$v-equals-snapshot" "$(cat /tmp/keep/$v-v1.sha)" "$(sha /dev/mapper/snapback-$v)"
  chunk_sums "/dev/mapper/snapback-$v" > /tmp/now.chunks
  check_eq "$v-every-chunk-as-snapshot" 256 "$(same_chunks /tmp/keep/$v-v1.chunks /tmp/now.chunks)"
done
mkdir -p /mnt/c && mount -t ext4 /dev/mapper/snapback-c /mnt/c
check_eq c-tree-as-snapshot "$(cat /tmp/keep/c-v1)" "$(manifest /mnt/c)"
umount /mnt/c
