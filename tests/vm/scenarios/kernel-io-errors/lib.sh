# Helpers for kernel-io-errors: snapbackd on the kernel backend over a private bus, with the
# pool and the volume's backing disk each behind a device-mapper device the scenario reloads
# to fail (dm-error, dm-flakey) or slow down (dm-delay) under a write load.

. /snapback/snapbackd-lib.sh

MNT=/mnt/data

write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "/dev/mapper/vpool"

[[volume]]
name = "data"
device = "/dev/mapper/vdata"
auto = false
cow_size = "32M"
EOC
}

# reload NAME TABLE : a new table for a dm device, swapped in under a suspend
reload() { dm suspend "$1" && dm reload "$1" --table "$2" && dm resume "$1"; }
pool_healthy() { reload vpool "0 $(sectors /dev/disk/pool) linear /dev/disk/pool 0"; }
# every read and write of the pool fails with EIO
pool_failing() { reload vpool "0 $(sectors /dev/disk/pool) error"; }
pool_slow() { reload vpool "0 $(sectors /dev/disk/pool) delay /dev/disk/pool 0 $1"; }
data_healthy() { reload vdata "0 $(sectors /dev/disk/data) linear /dev/disk/data 0"; }
# writes to the volume's disk fail with EIO, reads pass (up 0 s, down 60 s: always down)
data_failing_writes() { reload vdata "0 $(sectors /dev/disk/data) flakey /dev/disk/data 0 0 60 1 error_writes"; }

setup_devices() {
  dm create vpool --table "0 $(sectors /dev/disk/pool) linear /dev/disk/pool 0"
  dm create vdata --table "0 $(sectors /dev/disk/data) linear /dev/disk/data 0"
  write_config
}

keep_save() { (cd /tmp/keep && tar -cf /dev/disk/keep .); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }
target_of() { dm table "snapback-$1" | awk '{print $3}'; }

snapshot() { busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 data "$1" 0 2>&1; }

# start_load PREFIX : a writer in the background, rewriting 150 files $MNT/load/PREFIX-N of
# 4-64 KiB of random bytes in turn (the volume never fills), each with fsync (dd conv=fsync);
# a write that succeeded goes to the ledger /tmp/ledger ("NAME SHA", the last line of a name
# is its content), a failed one to /tmp/load-errors.
start_load() {
  mkdir -p $MNT/load; : > /tmp/ledger; : > /tmp/load-errors; rm -f /tmp/stop-load
  (
    i=0
    while [ ! -f /tmp/stop-load ]; do
      f=$1-$((i % 150))
      dd if=/dev/urandom of=/tmp/chunk bs=4k count=$((1 + i % 16)) 2>/dev/null
      if dd if=/tmp/chunk of=$MNT/load/$f bs=4k conv=fsync 2>/dev/null; then
        echo "$f $(sha /tmp/chunk)" >> /tmp/ledger
      else
        echo "$f" >> /tmp/load-errors
      fi
      i=$((i + 1))
    done
  ) &
  LOAD_PID=$!
}
stop_load() { touch /tmp/stop-load; wait "$LOAD_PID" 2>/dev/null || true; }

# ledger_intact : every file the load wrote, read back from the disk (caches dropped), holds
# the bytes of its last successful write
ledger_intact() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  awk '{ sum[$1] = $2 } END { for (f in sum) print f, sum[f] }' /tmp/ledger > /tmp/ledger.last
  _bad=0
  while read -r _f _s; do
    [ "$(sha $MNT/load/$_f 2>/dev/null)" = "$_s" ] || { echo "load/$_f differs"; _bad=$((_bad + 1)); }
  done < /tmp/ledger.last
  [ $_bad = 0 ]
}

# tree VERSION : a small tree under $MNT/etc, distinct per version, and a 2 MiB file
tree() {
  mkdir -p $MNT/etc
  _i=0
  while [ $_i -lt 30 ]; do echo "setting $_i of $1" > $MNT/etc/f$_i; _i=$((_i + 1)); done
  dd if=/dev/urandom of=$MNT/big-$1 bs=64k count=32 2>/dev/null
  sync
}

# snap_manifest ID : the tree in set ID's snapshot device, mounted read-only without replaying
# the journal (the snapshot must not change)
snap_manifest() {
  dm mknodes "snapback-data-$1"
  mkdir -p /mnt/snap
  mount -t ext4 -o ro,noload "/dev/mapper/snapback-data-$1" /mnt/snap || return 1
  manifest /mnt/snap
  umount /mnt/snap
}
