# Helpers for kernel-daemon-kills: snapbackd on the kernel backend killed (SIGKILL, no reboot)
# in the middle of its device-mapper transitions, and started again over what it left.

. /snapback/snapbackd-lib.sh

write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "/dev/disk/pool"

[[volume]]
name = "data"
device = "/dev/disk/data"
auto = true
cow_size = "8M"
EOC
}

MNT=/mnt/data
mount_data() { mkdir -p $MNT; mount -t ext4 /dev/mapper/snapback-data $MNT; }
target_of() { dm table "snapback-$1" | awk '{print $3}'; }
not_suspended() { dm info "$1" | grep -Eq 'State: +ACTIVE'; }
live() { dm info "$1" | grep -Eq 'Tables present: +LIVE'; }
no_inactive() { [ -z "$(dm table --inactive "$1")" ]; }
# the uuid snapbackd gives a device of volume data in role ROLE (origin's with the role swapped)
uuid_of() { dm info -c --noheadings -o uuid snapback-data | sed "s/\.origin\$/.$1/"; }

# every device of the volume live and running (what a restart must leave, whatever it found)
all_running() {
  for _d in $(dm ls | awk '/^snapback-data/ {print $1}'); do
    not_suspended "$_d" || { echo "$_d is suspended"; return 1; }
    live "$_d" || { echo "$_d has no live table"; return 1; }
  done
}

# write_ledger NAME KIB : a file written and fsync'd; on success it goes to the ledger
write_ledger() {
  head -c "$(($2 * 1024))" /dev/urandom > /tmp/payload
  dd if=/tmp/payload of="$MNT/$1" bs=4k conv=fsync 2>/dev/null && echo "$1 $(sha /tmp/payload)" >> /tmp/ledger
}

# write_within SECONDS NAME KIB : write_ledger in the background; it must end within SECONDS
# (on a suspended volume it would wait for ever, and this boot with it)
write_within() {
  rm -f "/tmp/done-$2"
  ( write_ledger "$2" "$3" && touch "/tmp/done-$2" ) >/dev/null 2>&1 &
  wait_file "/tmp/done-$2" "$1" || { echo "writing $2 did not end within $1 s"; return 1; }
}

# set_paths : the object paths of the sets the daemon lists
set_paths() { busctl call $BUS $MGR $BUS.Manager Status 2>/dev/null | grep -o "$SNAP/[0-9]*" | sort -u; }

# random_delay : 0.01 .. 0.30 s, from /dev/urandom (busybox ash may lack $RANDOM)
random_delay() { echo "0.$(printf %02d $(( $(od -An -N1 -tu1 /dev/urandom) % 30 + 1 )))"; }

# ledger_intact : every file the ledger holds has its bytes (read past the page cache)
ledger_intact() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  while read -r _f _sum; do
    [ "$(sha "$MNT/$_f")" = "$_sum" ] || { echo "$_f differs"; return 1; }
  done < /tmp/ledger
}

# blocked_writer TAG : a write + fsync in the background; /tmp/done-TAG appears when it ends
blocked_writer() {
  rm -f "/tmp/done-$1"
  ( write_ledger "w-$1" 256 && touch "/tmp/done-$1" ) >/dev/null 2>&1 &
}
wait_file() { _n=0; while [ ! -e "$1" ]; do sleep 0.2; _n=$((_n + 1)); [ $_n -lt $(($2 * 5)) ] || return 1; done; }

kill_daemon() { kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; }
