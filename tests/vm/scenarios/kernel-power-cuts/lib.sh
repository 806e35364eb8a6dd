# Helpers for kernel-power-cuts: snapbackd on the kernel backend, an ext4 on volume `data`, a
# self-checking workload, and a ledger of everything that was made durable, kept on its own
# disk (`ledger`) with O_DIRECT writes flushed before anything counts.
#
# The ledger disk, in 512-byte sectors:
#   0                  header
#   1 ..               region W: the workload's files (and rebases after a verified rollback)
#   W_BASE + W_MAX ..  region M: boots, operations on sets, manifests written
#   NOTE               the cut's note: the volume's kernel status just before the plug was pulled
#   SLOT_BASE ..       manifest slots of SLOT_SECTORS each (a tree as it was at snapshot time)
# A record is one sector: "R <index> <kind> <fields...> ." padded with spaces to 511 bytes and a
# newline; a region ends at the first sector that is not the next record (zero, or torn).

. /snapback/snapbackd-lib.sh

VOL=data
MNT=/mnt/data
LEDGER=/dev/disk/ledger
W_BASE=1
W_MAX=65535
M_BASE=65536
M_MAX=16383
NOTE=81919
SLOT_BASE=81920
SLOT_SECTORS=256
SLOTS=160
MAX_SETS=3
LEDGER_DIRS=8
COW_SIZE=52M     # more than the 48 MiB volume's every chunk plus metadata: a COW never fills

# ---- parameters, randomness --------------------------------------------------------------

# pc_params : SEED and BOOTS (from the host, /in/params) and BOOT (vm.boot= on the command
# line); a stream of random numbers for this boot on fd 7, from the seed and the boot number
pc_params() {
  . /in/params
  BOOT="$(sed -n 's/.*vm\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)"
  rand_stream "$SEED" "$BOOT" 1 > /tmp/rand.main
  exec 7</tmp/rand.main
}

# rand_stream SEED BOOT SALT : 20000 numbers below 2^30, one a line
rand_stream() {
  awk -v s="$1" -v b="$2" -v salt="$3" 'BEGIN {
    srand((s * 7919 + b * 104729 + salt * 1299709) % 2147483629 + 1)
    for (i = 0; i < 20000; i++) printf "%d\n", int(rand() * 1073741824) }'
}

# rnd VAR N : VAR = the next number of the stream, below N (no subshell: the stream is shared)
rnd() {
  read -r _r <&7
  eval "$1=$((_r % $2))"
}

# ---- the ledger --------------------------------------------------------------------------

region_base() { if [ "$1" = W ]; then echo $W_BASE; else echo $M_BASE; fi; }
region_max() { if [ "$1" = W ]; then echo $W_MAX; else echo $M_MAX; fi; }

# rec REGION FIELDS... : appends a record; it is on the disk (O_DIRECT, then a flush) on return
rec() {
  _reg="$1"; shift
  read -r _n < "/tmp/$_reg.next"
  [ "$_n" -lt "$(region_max "$_reg")" ] || { echo "CHECK FAIL ledger-room: region $_reg is full"; exit 1; }
  _text="R $_n $* ."
  [ ${#_text} -le 511 ] || { echo "CHECK FAIL ledger-record: too long: $_text"; exit 1; }
  printf '%-511s\n' "$_text" |
    dd of=$LEDGER bs=512 seek=$(($(region_base "$_reg") + _n)) count=1 iflag=fullblock \
      oflag=direct conv=notrunc,fsync status=none
  echo $((_n + 1)) > "/tmp/$_reg.next"
}

# region_read REGION OUT [NEXT] : the region's valid records as text lines; their count in NEXT
# (default /tmp/REGION.next, where `rec` appends)
region_read() {
  _base=$(region_base "$1"); _max=$(region_max "$1"); _at=0
  : > "$2.raw"
  # 1 MiB at a time, until a piece holds a zero byte (records never do)
  while [ $_at -lt $_max ]; do
    _count=2048; [ $((_at + _count)) -le $_max ] || _count=$((_max - _at))
    dd if=$LEDGER bs=512 skip=$((_base + _at)) count=$_count iflag=direct status=none > /tmp/piece
    tr -d '\000' < /tmp/piece > /tmp/piece.text
    cat /tmp/piece.text >> "$2.raw"
    [ "$(wc -c < /tmp/piece.text)" -eq $((_count * 512)) ] || break
    _at=$((_at + _count))
  done
  awk -v out="$2" -v nextf="${3:-/tmp/$1.next}" '
    { if ($1 != "R" || $2 != n || $NF != ".") exit; print > out; n++ }
    END { print n + 0 > nextf; close(out) }' "$2.raw"
  touch "$2"
}

# slot_write SLOT FILE : a manifest into its slot (O_DIRECT, flushed); "LEN SHA" in FILE.rec
slot_write() {
  _len=$(wc -c < "$2")
  [ "$_len" -le $((SLOT_SECTORS * 512)) ] || { echo "CHECK FAIL ledger-slot: manifest of $_len bytes"; exit 1; }
  [ "$1" -lt $SLOTS ] || { echo "CHECK FAIL ledger-slot: no slot left"; exit 1; }
  dd if="$2" of=$LEDGER bs=512 seek=$((SLOT_BASE + $1 * SLOT_SECTORS)) conv=notrunc,sync,fsync \
    oflag=direct status=none
  echo "$_len $(sha "$2")" > "$2.rec"
}

# slot_read SLOT LEN SHA OUT : a manifest back, checked against its recorded length and hash
slot_read() {
  dd if=$LEDGER bs=512 skip=$((SLOT_BASE + $1 * SLOT_SECTORS)) count=$SLOT_SECTORS iflag=direct \
    status=none | head -c "$2" > "$4"
  [ "$(sha "$4")" = "$3" ] || lose ledger-slot "manifest slot $1 does not match its record"
}

# ledger_load : replays both regions.
#   /tmp/W.files     path sha       every file of the workload made durable
#   /tmp/W.inflight  "kind a b"     the workload's step under way at the end, if any
#   /tmp/W.counter   the highest file number ever used (names never repeat)
#   /tmp/M.sets      id slot status [r0]   status: active, rb-merging, rb-scheduled,
#                    rb-inflight, rb-verified (the volume was checked against the manifest
#                    while merging, and written to since), del-inflight (deleted and merged
#                    sets are gone); r0: sectors left to merge when the merge was first seen
#   /tmp/M.snap      the slot of a Snapshot call under way at the end, if any
#   /tmp/M.slots     slot len sha   every manifest written
#   /tmp/M.boots     the O (operation started), Q (activate returned), E (operation ended
#                    cleanly) records, "kind boot op"
ledger_load() {
  region_read M /tmp/M.txt
  awk -v sets=/tmp/M.sets -v snap=/tmp/M.snap -v slots=/tmp/M.slots -v boots=/tmp/M.boots '
    $3 == "O" || $3 == "E" { print $3, $4, $5 > boots }
    $3 == "Q" { print "Q", $4, "-" > boots }
    $3 == "M" { print $4, $5, $6 > slots }
    $3 == "I" && $4 == "snapshot" { snapslot = $5 }
    $3 == "C" && $4 == "snapshot" { snapslot = ""; slot[$6] = $5; st[$6] = "active" }
    $3 == "A" { snapslot = ""; slot[$4] = $5; st[$4] = "active" }
    $3 == "N" { snapslot = "" }
    $3 == "I" && $4 == "rollback" { st[$5] = "rb-inflight" }
    $3 == "C" && $4 == "rollback" { st[$5] = "rb-" $6; r0[$5] = $7 }
    $3 == "H" { st[$4] = "rb-verified"; r0[$4] = $5 }
    $3 == "I" && $4 == "delete" { st[$5] = "del-inflight" }
    $3 == "C" && $4 == "delete" { delete st[$5] }
    $3 == "V" { st[$4] = "active" }
    $3 == "G" { delete st[$4] }
    END {
      printf "" > sets; printf "" > snap; printf "" > slots; printf "" > boots
      for (id in st) print id, slot[id], st[id], r0[id] > sets
      if (snapslot != "") print snapslot > snap
    }' /tmp/M.txt
  sort -n -o /tmp/M.sets /tmp/M.sets
  region_read W /tmp/W.txt
  w_replay /tmp/W.txt /tmp/W
}

# w_replay TXT OUT : the workload region's records replayed into OUT.files, OUT.inflight and
# OUT.counter (see ledger_load)
w_replay() {
  # only the last rebase matters: everything before it is replaced by that manifest
  _last_b="$(awk '$3 == "B" { s = $4 } END { print s }' "$1")"
  : > "$2.base"
  if [ -n "$_last_b" ]; then
    set -- "$1" "$2" $(awk -v s="$_last_b" '$1 == s' /tmp/M.slots)
    slot_read "$_last_b" "$4" "$5" "$2.base.man"
    ledger_view "$2.base.man" > "$2.base"
  fi
  awk -v files="$2.files" -v infl="$2.inflight" -v counter="$2.counter" -v base="$2.base" '
    function num(p) { sub(/.*\/f/, "", p); return p + 0 }
    $3 == "I" { pend = $4 " " $5 " " $6; pk = $4; pa = $5; pb = $6
                if (pk == "create" && num(pa) > hi) hi = num(pa)
                if (pk == "rename" && num(pb) > hi) hi = num(pb) }
    $3 == "C" { if (pk == "create") f[pa] = pb
                else if (pk == "rename") { f[pb] = f[pa]; delete f[pa] }
                else if (pk == "delete") delete f[pa]
                pend = "" }
    $3 == "Z" { pend = "" }
    $3 == "U" { f[$4] = $5 }
    $3 == "D" { delete f[$4] }
    $3 == "B" { for (p in f) delete f[p]; pend = ""
                while ((getline line < base) > 0) { split(line, a, " "); f[a[1]] = a[2] }
                close(base) }
    END {
      printf "" > files
      for (p in f) print p, f[p] > files
      printf "%s", (pend == "" ? "" : pend "\n") > infl
      print hi + 0 > counter
    }' "$1"
  sort -o "$2.files" "$2.files"
}

# ---- trees -------------------------------------------------------------------------------

# fast_manifest DIR : every directory and file (type, path, size, mode, owner, sha256), sorted;
# a few processes for the whole tree, so that it is quick while the filesystem is frozen
fast_manifest() {
  (cd "$1" && {
    find . ! -path './lost+found' ! -path './lost+found/*' -type d | sort |
      xargs -r stat -c 'D %n %a %u:%g'
    find . ! -path './lost+found/*' -type f | sort > /tmp/fm.files
    xargs -r sha256sum < /tmp/fm.files > /tmp/fm.sha
    xargs -r stat -c 'F %n %s %a %u:%g' < /tmp/fm.files |
      awk 'FILENAME == ARGV[1] { sha[$2] = $1; next } { print $0, sha[$2] }' /tmp/fm.sha -
  } | sort -k2,2)
}

# ledger_view MANIFEST : the workload's files in a manifest, as "path sha" (path from ledger/)
ledger_view() {
  awk '$1 == "F" && substr($2, 1, 9) == "./ledger/" { print "./" substr($2, 10), $6 }' "$1" | sort
}

# found_files : the workload's files on the mounted volume now, as "path sha"
found_files() {
  (cd $MNT/ledger && find . -type f | sort | xargs -r sha256sum | awk '{ print $2, $1 }')
}

# ledger_check FOUND WHEN [LEDGER] : the files found against the ledger (LEDGER.files and
# LEDGER.inflight, default /tmp/W): every durable file is there with its bytes, nothing else is,
# except what the step under way may have done
ledger_check() {
  awk -v infl="$(cat "${3:-/tmp/W}.inflight")" -v when="$2" '
    FILENAME == ARGV[1] { durable[$1] = $2; next }
    { found[$1] = $2 }
    END {
      split(infl, i, " "); k = i[1]; a = i[2]; b = i[3]
      for (p in durable) {
        if (p in found) {
          if (found[p] != durable[p]) { print when ": fsync\x27d file " p " changed (sha " found[p] ", was " durable[p] "; step under way: " infl ")"; bad = 1 }
        } else if (!((k == "rename" && a == p && (b in found)) || (k == "delete" && a == p))) {
          print when ": fsync\x27d file " p " is missing (step under way: " infl ")"; bad = 1
        }
      }
      for (p in found) {
        if (p in durable) continue
        if (k == "create" && a == p) continue
        if (k == "rename" && b == p && !(a in found) && found[p] == durable[a]) continue
        print when ": unexpected file " p " (step under way: " infl ")"; bad = 1
      }
      exit bad
    }' "${3:-/tmp/W}.files" "$1"
}

# phase NAME : the guest's clock at a step, in the log (where a boot spends its time)
phase() { echo "VM-INFO: phase $1 at $(cut -d' ' -f1 /proc/uptime) s"; }

# ---- failure -----------------------------------------------------------------------------

# lose NAME WHY... : a loss or an unexplained state: say so with what helps, and stop the run
# here (the disks stay as they are for a look)
lose() {
  _name="$1"; shift
  echo "CHECK FAIL $_name: $*"
  echo "VM-INFO: boot $BOOT seed $SEED: sets in the ledger:"; sed 's/^/VM-INFO:   /' /tmp/M.sets 2>/dev/null || true
  dm table 2>/dev/null | sed 's/^/VM-INFO:   dm /' || true
  tail -n 30 /tmp/snapbackd.log 2>/dev/null | sed 's/^/VM-INFO:   log /' || true
  dmesg | tail -n 20 | sed 's/^/VM-INFO:   kernel /' || true
  exit 1
}

# ---- product and disks -------------------------------------------------------------------

write_config() {
  mkdir -p /etc/snapback
  cat > /etc/snapback/snapback.toml <<EOC
[pool]
path = "/dev/mapper/slowpool"

[[volume]]
name = "$VOL"
device = "/dev/disk/$VOL"
auto = true
cow_size = "$COW_SIZE"
EOC
}

# The pool behind a dm-delay whose delay changes while in use, to make merges last long enough
# to be cut part way.
pool_table() { echo "0 $(sectors /dev/disk/pool) delay /dev/disk/pool 0 $1"; }
pool_create() { dm create slowpool --table "$(pool_table "$1")"; }
pool_delay() { dm suspend slowpool && dm reload slowpool --table "$(pool_table "$1")" && dm resume slowpool; }

mount_data() { mkdir -p $MNT; mount -t ext4 /dev/mapper/snapback-$VOL $MNT; MOUNTED=1; }
umount_data() { umount $MNT; MOUNTED=0; }

# set_ids : "id State" of every set the daemon lists, one a line. The objects on the bus and
# the sets Status() names must agree. A merge that finishes while they are read removes its set
# in between (busctl tree then fails on the vanished object, or the two differ): read again,
# and fail only when five tries in a row give no consistent answer (never an empty list).
set_ids() {
  _try=0
  while :; do
    _why=""
    if ! _tree="$(busctl tree --list $BUS 2>&1)"; then
      _why="busctl tree failed: $_tree"
    elif ! _status="$(busctl call $BUS $MGR $BUS.Manager Status 2>&1)"; then
      _why="Status failed: $_status"
    else
      echo "$_tree" | sed -n "s#^$SNAP/\([0-9]*\)\$#\1#p" | sort -n > /tmp/ids.tree
      echo "$_status" | awk '{ for (i = 1; i < NF; i++) if ($i == "\"snapshots\"" && $(i + 1) == "ao")
          for (j = 1; j <= $(i + 2); j++) { p = $(i + 2 + j); gsub(/"/, "", p); sub(/.*\//, "", p); print p } }' |
        sort -n > /tmp/ids.status
      cmp -s /tmp/ids.tree /tmp/ids.status && break
      _why="objects on the bus: $(tr '\n' ' ' < /tmp/ids.tree)but Status lists: $(tr '\n' ' ' < /tmp/ids.status)"
    fi
    _try=$((_try + 1))
    [ $_try -lt 5 ] || { echo "$_why"; return 1; }
    sleep 1
  done
  while read -r _id; do
    # a merge that finishes now removes its set: then it is not listed
    if _st="$(busctl get-property $BUS $SNAP/$_id $BUS.Snapshot State 2>&1)"; then
      echo "$_id $(echo "$_st" | sed 's/^s "\(.*\)"$/\1/')"
    elif busctl tree --list $BUS | grep -qx "$SNAP/$_id"; then
      echo "set $_id: $_st"; return 1
    fi
  done < /tmp/ids.tree
}

# merge_left : sectors the kernel still has to merge into the volume (allocated - metadata)
merge_left() { dm status snapback-$VOL | awk '$3 == "snapshot-merge" { split($4, a, "/"); print a[1] - $5 }'; }

# ---- the cut -----------------------------------------------------------------------------

# cut_now : pulls the plug, first noting on the ledger disk (one O_DIRECT sector, some 50 ms)
# how far the volume's merge was, which the next boot cannot see any more (activation resumes
# the merge at once): "K boot target allocated metadata"
cut_now() {
  _st="$(dm status snapback-$VOL 2>/dev/null |
    awk 'NR == 1 { split($4, a, "/"); print $3, (a[1] == "" ? "-" : a[1]), ($5 == "" ? "-" : $5) }')"
  _note="K $BOOT ${_st:-none - -} ."
  echo "VM-INFO: cut note: $_note"
  printf '%-511s\n' "$_note" |
    dd of=$LEDGER bs=512 seek=$NOTE count=1 iflag=fullblock oflag=direct conv=notrunc status=none
  power_cut
}

# cut_note : the note the last cut left, "boot target allocated metadata" (empty if none)
cut_note() {
  dd if=$LEDGER bs=512 skip=$NOTE count=1 iflag=direct status=none | tr -d '\000' |
    awk '$1 == "K" && $NF == "." { print $2, $3, $4, $5 }'
}

# arm_cut MS : the power goes off MS ms from now, whatever runs then
arm_cut() {
  (usleep $(($1 * 1000)); cut_now) &
  CUT_PID=$!
}
disarm_cut() {
  [ -n "${CUT_PID:-}" ] || return 0
  kill "$CUT_PID" 2>/dev/null || true
  wait "$CUT_PID" 2>/dev/null || true
  CUT_PID=""
}

# ---- the load ----------------------------------------------------------------------------

# start_load : the workload (fsync'd creates, renames, deletes, each in the ledger) and bulk
# writes (not fsync'd, half of them O_DIRECT so the snapshots copy), in a session of their
# own so that a Snapshot can stop them all at once
start_load() {
  rm -f /tmp/stop-load
  cp /tmp/W.files /tmp/L.files
  setsid sh -e -c '. /snapback/vm-lib.sh; . /scenario/lib.sh; load_main' > /tmp/load.log 2>&1 &
  LOAD_PID=$!
}
# stop_load : asks both loops to stop after their step, and waits (never while paused)
stop_load() {
  [ -n "${LOAD_PID:-}" ] || return 0
  touch /tmp/stop-load
  wait "$LOAD_PID" || { cat /tmp/load.log; lose load "the workload failed although nothing was cut"; }
  LOAD_PID=""
  # what the workload made durable is the ledger's state now (it never leaves a step half done
  # when asked to stop)
  cp /tmp/L.files /tmp/W.files
  : > /tmp/W.inflight
}
pause_load() { kill -STOP "-$LOAD_PID"; }
resume_load() { kill -CONT "-$LOAD_PID"; }

load_main() {
  . /in/params
  BOOT="$(sed -n 's/.*vm\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)"
  bulk_loop &
  _bulk=$!
  workload_loop
  wait $_bulk
}

# churn MIB : about MIB of O_DIRECT writes, runs of 1 to 8 chunks (16 KiB) at random places of
# the bulk files: an "upgrade" whose rollback then has that much to merge. The kernel merges a
# run of adjacent chunks in one step; the pool's delay makes each step slow enough to be cut.
churn() {
  rand_stream "$SEED" "$BOOT" 4 | head -n $(($1 * 14)) | while read -r _r; do
    dd if=/dev/urandom of=$MNT/bulk/b$((_r % 2)) bs=16k seek=$(((_r / 2) % 504)) \
      count=$(((_r / 1024) % 8 + 1)) conv=notrunc oflag=direct status=none
  done
}

bulk_loop() {
  rand_stream "$SEED" "$BOOT" 3 > /tmp/rand.bulk
  exec 7</tmp/rand.bulk
  while [ ! -e /tmp/stop-load ]; do
    rnd _f 2; rnd _at 128; rnd _n 8; rnd _direct 2
    if [ $_direct = 1 ]; then _flag=oflag=direct; else _flag=; fi
    dd if=/dev/urandom of=$MNT/bulk/b$_f bs=64k seek=$_at count=$((_n + 1)) conv=notrunc $_flag \
      status=none
    usleep 100000
  done
}

# workload_loop : one durable step at a time: the intent in the ledger, the step, file and
# directory fsync'd, then the commit in the ledger. /tmp/L.files follows what is durable.
workload_loop() {
  rand_stream "$SEED" "$BOOT" 2 > /tmp/rand.load
  exec 7</tmp/rand.load
  read -r _counter < /tmp/W.counter
  while [ ! -e /tmp/stop-load ]; do
    _count=$(wc -l < /tmp/L.files)
    rnd _dice 10
    if [ "$_count" -lt 16 ] || { [ $_dice -le 5 ] && [ "$_count" -le 150 ]; }; then
      _counter=$((_counter + 1)); rnd _d $LEDGER_DIRS; rnd _size 32768
      _p="./d$_d/f$_counter"
      head -c $((_size + 1)) /dev/urandom > /tmp/w.blob
      _sha=$(sha /tmp/w.blob)
      rec W I create "$_p" "$_sha"
      dd if=/tmp/w.blob of="$MNT/ledger/$_p" bs=64k conv=fsync status=none
      sync "$MNT/ledger/d$_d"
      rec W C
      echo "$_p $_sha" >> /tmp/L.files
    elif [ $_dice -le 7 ]; then
      rnd _k "$_count"; _from=$(sed -n "$((_k + 1))p" /tmp/L.files | cut -d' ' -f1)
      _counter=$((_counter + 1)); rnd _d $LEDGER_DIRS
      _to="./d$_d/f$_counter"
      rec W I rename "$_from" "$_to"
      mv "$MNT/ledger/$_from" "$MNT/ledger/$_to"
      sync "$MNT/ledger/d$_d" "$(dirname "$MNT/ledger/$_from")"
      rec W C
      awk -v f="$_from" -v t="$_to" '$1 == f { $1 = t } { print }' /tmp/L.files > /tmp/L.new
      mv /tmp/L.new /tmp/L.files
    else
      rnd _k "$_count"; _path=$(sed -n "$((_k + 1))p" /tmp/L.files | cut -d' ' -f1)
      rec W I delete "$_path"
      rm "$MNT/ledger/$_path"
      sync "$(dirname "$MNT/ledger/$_path")"
      rec W C
      awk -v f="$_path" '$1 != f' /tmp/L.files > /tmp/L.new
      mv /tmp/L.new /tmp/L.files
    fi
  done
}
