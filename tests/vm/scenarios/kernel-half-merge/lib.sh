# Helpers for the kernel-half-merge boots: snapbackd on the kernel backend over a private bus,
# with volume a's backing disk behind a device-mapper device that can be made to fail writes
# (dm-flakey error_writes) in the middle of a merge.

. /snapback/snapbackd-lib.sh

CHUNK=16384            # the kernel backend's chunk size (16 KiB)
CHUNKS=256             # volumes a and b: 4 MiB

# write_config : the administrator's configuration; a's device is the failable vback-a
write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "/dev/mapper/slowpool"

[[volume]]
name = "a"
device = "/dev/mapper/vback-a"
auto = false
cow_size = "4M"

[[volume]]
name = "b"
device = "/dev/disk/b"
auto = false
cow_size = "4M"

[[volume]]
name = "c"
device = "/dev/disk/c"
auto = false
cow_size = "8M"
EOC
}

# backing_healthy / backing_failing : vback-a as a plain linear map of disk a, or dm-flakey
# failing every write with EIO while reads still pass (up 0 s, down 60 s: always down)
backing_table_healthy() { echo "0 $(sectors /dev/disk/a) linear /dev/disk/a 0"; }
backing_table_failing() { echo "0 $(sectors /dev/disk/a) flakey /dev/disk/a 0 0 60 1 error_writes"; }
backing_reload() { dm suspend vback-a && dm reload vback-a --table "$1" && dm resume vback-a; }

# pool_delay MS : every I/O to the pool (and so every COW) delayed by MS ms (dm-delay), so a
# merge of scattered chunks takes long enough to be caught part way
pool_table() { echo "0 $(sectors /dev/disk/pool) delay /dev/disk/pool 0 $1"; }
pool_delay() { dm suspend slowpool && dm reload slowpool --table "$(pool_table "$1")" && dm resume slowpool; }

keep_save() { (cd /tmp/keep && tar -cf /dev/disk/keep .); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }

target_of() { dm table "snapback-$1" | awk '{print $3}'; }
no_device() { _ls="$(dm ls)" || return 1; ! echo "$_ls" | grep -Eq "$1"; }

# chunk_sums DEV : "INDEX SHA" per 16 KiB chunk, read with O_DIRECT (never the page cache)
chunk_sums() {
  dd if="$1" of=/tmp/chunks.img bs=64k iflag=direct 2>/dev/null
  _i=0
  while [ $_i -lt $CHUNKS ]; do
    echo "$_i $(dd if=/tmp/chunks.img bs=$CHUNK skip=$_i count=1 2>/dev/null | sha256sum | cut -c1-32)"
    _i=$((_i + 1))
  done
  rm -f /tmp/chunks.img
}

# same_chunks A B : how many chunks of two chunk_sums lists are identical
same_chunks() { grep -cxF -f "$1" "$2" || true; }

# write_chunks DEV : new random data into every other chunk (0, 2, 4, ...): 128 exceptions
# none of them adjacent, so the kernel merges them one chunk at a time
write_chunks() {
  _i=0
  while [ $_i -lt $CHUNKS ]; do
    dd if=/dev/urandom of="$1" bs=$CHUNK count=1 seek=$_i oflag=direct 2>/dev/null
    _i=$((_i + 2))
  done
}

# alloc VOL : the allocated sectors of the volume's merging snapshot (status field 4)
alloc() { dm status "snapback-$1" | awk '{split($4, a, "/"); print a[1]}'; }
