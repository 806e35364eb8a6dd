# Every boot of kernel-power-cuts (the boot number is vm.boot=, the seed and the number of boots
# come from the host in /in/params). Boot 1 formats the pool and puts ext4 on volume `data`.
# Every later boot first VERIFIES what the previous one left: `snapbackd activate` (cut by the
# power itself after a random delay when the boot before scheduled a rollback, or sometimes
# when it was cut mid-merge), the daemon (which resumes a merge), then every set the ledger
# knows is listed in a state that explains it, a rollback that was committed (or may have
# been) finishes and the volume equals the set's manifest, or else every fsync'd file of the
# workload is there with its bytes; one active set's snapshot device equals its manifest;
# `e2fsck -fn` is clean. Then it STARTS ONE OPERATION chosen from the seed and the boot number
# (Snapshot under a write load, Rollback of the unmounted volume, Rollback scheduled while
# mounted, Delete under load, fsync'd writes) and pulls the plug after a random delay, or lets
# it finish (one boot in seven). The last boot rolls every remaining set back and compares.
# A loss stops the run at once (the boot exits non-zero), leaving the disks as they are.
. /scenario/lib.sh
need_bin snapbackd
pc_params
write_config
CUT_PID=""; LOAD_PID=""; MOUNTED=0
prev=$((BOOT - 1))

if [ "$BOOT" = 1 ]; then
  # ---- a fresh machine: the ledger, the pool, the filesystem
  printf '%-511s\n' "power-cuts ledger seed $SEED" |
    dd of=$LEDGER bs=512 count=1 iflag=fullblock oflag=direct conv=notrunc,fsync status=none
  for f in W.files W.inflight M.sets M.snap M.slots M.boots active; do : > /tmp/$f; done
  echo 0 > /tmp/W.next; echo 0 > /tmp/M.next; echo 0 > /tmp/W.counter
  pool_create 0
  snapbackd init --config /etc/snapback/snapback.toml > /tmp/init.log 2>&1 || lose init "$(tail -n 3 /tmp/init.log)"
  snapbackd activate --config /etc/snapback/snapback.toml > /tmp/activate.log 2>&1 ||
    lose activate "$(tail -n 3 /tmp/activate.log)"
  mkfs.ext4 -q -F /dev/mapper/snapback-$VOL
  mount_data
  mkdir -p $MNT/bulk
  i=0; while [ $i -lt $LEDGER_DIRS ]; do mkdir -p $MNT/ledger/d$i; i=$((i + 1)); done
  for b in b0 b1; do dd if=/dev/urandom of=$MNT/bulk/$b bs=1M count=8 status=none; done
  sync
  start_bus
  start_daemon
  owns_name || lose start-daemon "snapbackd did not start"
  echo "CHECK PASS setup"
  echo "PCUT boot=1 setup=1"
else
  phase start
  ledger_load
  phase ledger-read
  # ---- how the previous boot ended: its last operation, and whether it ended cleanly
  last_op=$(awk -v b=$prev '$1 == "O" && $2 == b { op = $3 } END { print op }' /tmp/M.boots)
  ended=$(awk -v b=$prev -v op="$last_op" '$1 == "E" && $2 == b && $3 == op { e = 1 } END { print e + 0 }' /tmp/M.boots)
  activated=$(awk -v b=$prev '$1 == "Q" && $2 == b { q = 1 } END { print q + 0 }' /tmp/M.boots)

  # ---- where the previous boot's power cut landed (from the ledger and the cut's note, before
  # anything changes them; said now, since this boot may be cut in activation)
  result=clean; moment=-; merged=-
  if [ "$ended" = 0 ]; then
    result=cut
    case "$last_op" in
      writes) moment=writes ;;
      snapshot) if [ -s /tmp/M.snap ]; then moment=in-call; else moment=after-call; fi ;;
      delete) if grep -q ' del-inflight' /tmp/M.sets; then moment=in-call; else moment=after-call; fi ;;
      rollback-sched) if grep -q ' rb-inflight' /tmp/M.sets; then moment=in-call; else moment=after-call; fi ;;
      activate) if [ "$activated" = 1 ]; then moment=after-activate; else moment=in-activate; fi
        set -- $(cut_note) - - - -
        if [ "$1" = "$prev" ] && [ "$2" = snapshot-merge ]; then moment="$moment-merging"; fi ;;
      rollback | merge-writes)
        # the note the cut left says where the kernel's merge was
        set -- $(cut_note) - - - -
        if [ "$1" != "$prev" ]; then moment=unknown
        elif [ "$2" = snapshot-merge ] && [ "$3" = "$4" ]; then moment=merge-finishing
        elif [ "$2" = snapshot-merge ]; then
          left=$(($3 - $4))
          if grep -q ' rb-inflight' /tmp/M.sets; then moment=in-call-merging; else moment=mid-merge; fi
          r0=$(awk '$3 == "rb-merging" || $3 == "rb-verified" { print $4 }' /tmp/M.sets)
          if [ "${r0:-0}" -gt 0 ]; then merged=$(( (100 * (r0 - left)) / r0 )); fi
        elif grep -q ' rb-inflight' /tmp/M.sets; then moment=in-call
        else moment=after-merge; fi ;;
      *) moment=unknown ;;
    esac
  fi

  echo "PCUT boot=$BOOT prev=$prev result=$result op=${last_op:-none} moment=$moment merged=$merged"

  # ---- activation, cut by the power after a random delay when the previous boot scheduled a
  # rollback (3 in 4) or was cut mid-merge (1 in 3): the merge starts here, at boot
  arm=0
  rnd dice 12
  if [ "$BOOT" -lt "$BOOTS" ]; then
    if [ "$last_op" = rollback-sched ] && [ $dice -lt 9 ]; then arm=1; fi
    if [ "$last_op" = rollback ] && [ "$ended" = 0 ] && [ $dice -lt 4 ]; then arm=1; fi
  fi
  delay=0
  if [ $arm = 1 ]; then rnd d 4; delay=$(echo "0 10 20 40" | cut -d" " -f$((d + 1))); fi
  pool_create $delay
  if [ $arm = 1 ]; then
    rnd t 3000
    rec M O "$BOOT" activate
    echo "VM-INFO: activate with the power cut armed at $t ms, pool delay $delay ms"
    arm_cut "$t"
  fi
  snapbackd activate --config /etc/snapback/snapback.toml > /tmp/activate.log 2>&1 ||
    lose activate "$(tail -n 3 /tmp/activate.log)"
  phase activated
  [ $arm = 0 ] || rec M Q "$BOOT"

  # ---- a committed rollback whose merge activation started: half the time the volume is
  # mounted at once, as a booting system does, and must read as the snapshot while the kernel
  # merges; the workload then writes to it during the merge (this boot's operation)
  early=""
  rnd e 2; rnd d 3
  if [ $arm = 0 ] && [ "$BOOT" -lt "$BOOTS" ] && [ $e = 0 ] &&
     [ "$(dm table snapback-$VOL | awk '{ print $3 }')" = snapshot-merge ]; then
    early="$(awk '$3 == "rb-merging" || $3 == "rb-scheduled" { print $1, $2 }' /tmp/M.sets)"
  fi
  if [ -n "$early" ]; then
    delay=$(echo "10 20 40" | cut -d" " -f$((d + 1)))
    pool_delay "$delay"
    set -- $early
    early_id=$1; early_slot=$2
    set -- $(awk -v s="$early_slot" '$1 == s' /tmp/M.slots)
    slot_read "$early_slot" "$2" "$3" /tmp/want.man
    early_r0=$(merge_left)
    mount_data
    fast_manifest $MNT > /tmp/now.man
    if ! cmp -s /tmp/want.man /tmp/now.man; then
      diff /tmp/want.man /tmp/now.man | head -n 20 | sed 's/^/VM-INFO: diff /'
      lose rollback-while-merging "volume merging set $early_id differs from its manifest (slot $early_slot)"
    fi
    echo "CHECK PASS boot$BOOT-merging-set-$early_id-reads-as-manifest"
    echo "VM-INFO: mounted while merging set $early_id, $early_r0 sectors left, pool delay $delay ms"
  fi
  start_bus
  start_daemon
  owns_name || lose start-daemon "snapbackd did not start"
  if [ $arm = 1 ]; then disarm_cut; rec M E "$BOOT" activate; fi
  [ "$delay" = 0 ] || [ -n "$early" ] || pool_delay 0
  phase daemon-started

  # ---- every set the ledger knows, in a state that explains it
  set_ids > /tmp/listed || lose set-list "$(cat /tmp/listed)"
  : > /tmp/resolve; : > /tmp/active; rollback=""
  while read -r id slot status r0 <&3; do
    listed="$(awk -v i="$id" '$1 == i { print $2 }' /tmp/listed)"
    why="set $id: the ledger says $status, the daemon lists ${listed:-nothing}"
    case "$status:$listed" in
      active:active) echo "$id $slot" >> /tmp/active ;;
      rb-merging:merging | rb-merging:merge-scheduled | rb-merging: | \
      rb-scheduled:merging | rb-scheduled:merge-scheduled | rb-scheduled: | \
      rb-inflight:merging | rb-inflight:merge-scheduled | rb-inflight: | \
      rb-verified:merging | rb-verified:)
        rollback="$id $slot $status ${r0:-0} ${listed:-gone}" ;;
      rb-inflight:active | del-inflight:active) echo "V $id" >> /tmp/resolve; echo "$id $slot" >> /tmp/active ;;
      del-inflight:) echo "G $id" >> /tmp/resolve ;;
      del-inflight:invalid)
        # cut after Delete committed the set invalid and before it forgot it: the deletion
        # was interrupted (never a set that looks whole again); a second Delete finishes it
        out="$(busctl call $BUS $MGR $BUS.Manager Delete o "$SNAP/$id" 2>&1)" ||
          lose delete-again "set $id: Delete of the interrupted deletion failed: $out"
        echo "VM-INFO: set $id: an interrupted deletion (invalid), deleted again"
        echo "G $id" >> /tmp/resolve ;;
      *) lose set-state "$why" ;;
    esac
  done 3< /tmp/M.sets
  awk 'FILENAME == ARGV[1] { known[$1] = 1; next } !($1 in known)' /tmp/M.sets /tmp/listed > /tmp/unknown
  if [ -s /tmp/M.snap ]; then
    read -r snapslot < /tmp/M.snap
    case "$(wc -l < /tmp/unknown)" in
      0) echo "N $snapslot" >> /tmp/resolve ;;
      1) read -r id st < /tmp/unknown
         [ "$st" = active ] || lose set-state "set $id from the Snapshot call cut by the power is $st"
         echo "A $id $snapslot" >> /tmp/resolve; echo "$id $snapslot" >> /tmp/active ;;
      *) lose set-unknown "sets nobody took: $(tr '\n' ' ' < /tmp/unknown)" ;;
    esac
  elif [ -s /tmp/unknown ]; then
    lose set-unknown "sets nobody took: $(tr '\n' ' ' < /tmp/unknown)"
  fi
  while read -r k a b; do rec M "$k" "$a" $b; done < /tmp/resolve
  sort -n -o /tmp/active /tmp/active
  echo "CHECK PASS boot$BOOT-sets-explained"

  # ---- the volume's content
  phase sets-checked
  files=0; rolled=0; views=0
  if [ -n "$early" ]; then
    # checked above while merging; from here the workload's files are the manifest's
    files=$(grep -c '^F ' /tmp/want.man || true); rolled=1
    rec W B "$early_slot"
    rec M H "$early_id" "${early_r0:-0}"
    ledger_view /tmp/want.man > /tmp/W.files; : > /tmp/W.inflight
  elif [ -n "$rollback" ] && [ "$(echo "$rollback" | cut -d' ' -f3)" != rb-verified ]; then
    set -- $rollback
    rb_id=$1; rb_slot=$2
    wait_gone "$rb_id" 600 > /tmp/wait.log 2>&1 || lose merge-finishes "set $rb_id ($3, $5 at start): $(cat /tmp/wait.log)"
    set -- $(awk -v s="$rb_slot" '$1 == s' /tmp/M.slots)
    slot_read "$rb_slot" "$2" "$3" /tmp/want.man
    mount_data
    fast_manifest $MNT > /tmp/now.man
    if ! cmp -s /tmp/want.man /tmp/now.man; then
      diff /tmp/want.man /tmp/now.man | head -n 20 | sed 's/^/VM-INFO: diff /'
      lose rollback-exact "volume after the rollback of set $rb_id differs from its manifest (slot $rb_slot)"
    fi
    echo "CHECK PASS boot$BOOT-rollback-of-set-$rb_id-exact"
    files=$(grep -c '^F ' /tmp/want.man || true); rolled=1
    # from here the workload's files are the manifest's
    rec W B "$rb_slot"
    rec M G "$rb_id"
    ledger_view /tmp/want.man > /tmp/W.files; : > /tmp/W.inflight
  else
    # a rollback checked while merging in an earlier boot, written to since: it finishes, and
    # the workload's files are as the ledger says
    if [ -n "$rollback" ]; then
      set -- $rollback
      wait_gone "$1" 600 > /tmp/wait.log 2>&1 || lose merge-finishes "set $1 ($3, $5 at start): $(cat /tmp/wait.log)"
      rec M G "$1"
    fi
    mount_data
    found_files > /tmp/found
    ledger_check /tmp/found "boot $BOOT, after boot $prev ($result${last_op:+ in $last_op})" > /tmp/check.log ||
      lose fsyncd-files-intact "$(head -n 5 /tmp/check.log | tr '\n' ' ')"
    echo "CHECK PASS boot$BOOT-fsyncd-files-intact"
    files=$(wc -l < /tmp/W.files)
    # the step under way at the cut: the ledger takes what the disk says it did
    if [ -s /tmp/W.inflight ]; then
      read -r k a b < /tmp/W.inflight
      fa=$(awk -v p="$a" '$1 == p { print $2 }' /tmp/found)
      fb=$(awk -v p="${b:-}" '$1 == p { print $2 }' /tmp/found)
      case "$k" in
        create) if [ -n "$fa" ]; then rec W U "$a" "$fa"; fi ;;
        rename) if [ -n "$fb" ]; then rec W U "$b" "$fb"; rec W D "$a"; fi ;;
        delete) if [ -z "$fa" ]; then rec W D "$a"; fi ;;
      esac
      rec W Z
    fi
    cp /tmp/found /tmp/W.files; : > /tmp/W.inflight
  fi

  # ---- one active set's snapshot device reads as the set's manifest
  phase content-checked
  if [ -s /tmp/active ]; then
    rnd k "$(wc -l < /tmp/active)"
    set -- $(sed -n "$((k + 1))p" /tmp/active)
    view_id=$1; view_slot=$2
    set -- $(awk -v s="$view_slot" '$1 == s' /tmp/M.slots)
    slot_read "$view_slot" "$2" "$3" /tmp/want.man
    dm mknodes "snapback-$VOL-$view_id"
    mkdir -p /mnt/snap
    mount -t ext4 -o ro,noload "/dev/mapper/snapback-$VOL-$view_id" /mnt/snap ||
      lose snapshot-view "the snapshot of set $view_id does not mount"
    fast_manifest /mnt/snap > /tmp/view.man
    umount /mnt/snap
    if ! cmp -s /tmp/want.man /tmp/view.man; then
      diff /tmp/want.man /tmp/view.man | head -n 20 | sed 's/^/VM-INFO: diff /'
      lose snapshot-view "the snapshot of set $view_id differs from its manifest (slot $view_slot)"
    fi
    echo "CHECK PASS boot$BOOT-snapshot-$view_id-as-taken"
    views=1
  fi

  # ---- the devices: exactly the active sets' snapshots, the volume linear when there are none
  dm ls | sed -n "s/^snapback-$VOL-\([0-9]*\)[[:space:]].*/\1/p" | sort -n > /tmp/devices
  cut -d' ' -f1 /tmp/active > /tmp/active.ids
  cmp -s /tmp/devices /tmp/active.ids ||
    lose devices "snapshot devices $(tr '\n' ' ' < /tmp/devices)for active sets $(tr '\n' ' ' < /tmp/active.ids)"
  want_target=snapshot-origin; [ -s /tmp/active ] || want_target=linear
  got_target=$(dm table snapback-$VOL | awk '{ print $3 }')
  # mounted while merging: the daemon may have finished the merge since
  [ "$got_target" = "$want_target" ] || { [ -n "$early" ] && [ "$got_target" = snapshot-merge ]; } ||
    lose devices "volume is $got_target, expected $want_target"

  phase views-checked
  if [ -z "$early" ]; then   # (else mounted: the next boot checks it)
    umount_data
    e2fsck -fn /dev/mapper/snapback-$VOL > /tmp/fsck.log 2>&1 || lose e2fsck "$(tail -n 5 /tmp/fsck.log | tr '\n' ' ')"
    echo "CHECK PASS boot$BOOT-e2fsck-clean"
  fi
  phase fsck-done
  echo "PCUT verified boot=$BOOT files=$files rollback=$rolled view=$views sets=$(wc -l < /tmp/active)"
fi
SLOT_NEXT=$(awk 'BEGIN { n = 0 } $1 >= n { n = $1 + 1 } END { print n }' /tmp/M.slots)

# pick_active : ID = a random active set
pick_active() {
  rnd _k "$(wc -l < /tmp/active)"
  set -- $(sed -n "$((_k + 1))p" /tmp/active)
  ID=$1
}

# ---- the last boot: every remaining set rolls back to its manifest
if [ "$BOOT" = "$BOOTS" ]; then
  final=0
  while read -r id slot <&3; do
    out="$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/$id 0)" || lose final-rollback "Rollback of set $id: $out"
    [ "$out" = 's "merging"' ] || lose final-rollback "Rollback of set $id answered $out"
    wait_gone "$id" 600 > /tmp/wait.log 2>&1 || lose final-rollback "set $id: $(cat /tmp/wait.log)"
    set -- $(awk -v s="$slot" '$1 == s' /tmp/M.slots)
    slot_read "$slot" "$2" "$3" /tmp/want.man
    mount_data
    fast_manifest $MNT > /tmp/now.man
    umount_data
    if ! cmp -s /tmp/want.man /tmp/now.man; then
      diff /tmp/want.man /tmp/now.man | head -n 20 | sed 's/^/VM-INFO: diff /'
      lose final-rollback-exact "volume after the rollback of set $id differs from its manifest (slot $slot)"
    fi
    rec W B "$slot"; rec M G "$id"
    echo "CHECK PASS final-rollback-of-set-$id-exact"
    echo "PCUT final-rollback set=$id files=$(grep -c '^F ' /tmp/want.man || true)"
    final=$((final + 1))
  done 3< /tmp/active
  check_eq final-volume-linear linear "$(dm table snapback-$VOL | awk '{ print $3 }')"
  e2fsck -fn /dev/mapper/snapback-$VOL > /tmp/fsck.log 2>&1 || lose e2fsck "$(tail -n 5 /tmp/fsck.log | tr '\n' ' ')"
  echo "CHECK PASS final-e2fsck-clean"
  stop_daemon
  exit 0
fi

# ---- one operation, chosen from the seed and the boot number, cut at a random moment
nactive=$(wc -l < /tmp/active)
rnd dice 100
if [ -n "${early:-}" ]; then
  op=merge-writes
elif [ "$nactive" = 0 ]; then
  if [ $dice -lt 70 ]; then op=snapshot; else op=writes; fi
elif [ "$nactive" -ge $MAX_SETS ]; then
  if [ $dice -lt 30 ]; then op=delete; elif [ $dice -lt 65 ]; then op=rollback
  elif [ $dice -lt 85 ]; then op=rollback-sched; else op=writes; fi
else
  if [ $dice -lt 30 ]; then op=snapshot; elif [ $dice -lt 45 ]; then op=writes
  elif [ $dice -lt 70 ]; then op=rollback; elif [ $dice -lt 85 ]; then op=rollback-sched
  else op=delete; fi
fi
rnd c 7
if [ $c -lt 6 ]; then cut=1; else cut=0; fi
echo "VM-INFO: boot $BOOT: $op, $( [ $cut = 1 ] && echo "power cut armed" || echo "left to finish")"
[ $MOUNTED = 1 ] || mount_data
phase op-start

# settle MS : after the operation, the load goes on; a boot to be cut waits for its cut
settle() {
  if [ $cut = 1 ]; then sleep 600; lose harness "the power cut did not happen"; fi
  usleep $(($1 * 1000))
}

case $op in
  merge-writes)
    # the volume mounted while the merge runs: fsync'd writes, the merge finishing under the
    # mounted filesystem (the daemon swaps the volume back to linear), the cut anywhere in that
    start_load
    rec M O "$BOOT" merge-writes
    if [ $cut = 1 ]; then rnd t 6000; arm_cut $((t + 200)); fi
    wait_gone "$early_id" 600 > /tmp/wait.log 2>&1 || lose merge-finishes "set $early_id: $(cat /tmp/wait.log)"
    rec M G "$early_id"
    pool_delay 0
    rnd t 1500; settle $((t + 300))
    ;;
  writes)
    start_load
    rec M O "$BOOT" writes
    if [ $cut = 1 ]; then rnd t 4700; arm_cut $((t + 300)); fi
    rnd t 3000; settle $((t + 500))
    ;;
  snapshot)
    start_load
    rnd t 1500; usleep $(((t + 200) * 1000))
    rec M O "$BOOT" snapshot
    # The manifest, with every writer stopped until the snapshot is taken: half the time read
    # with ext4 frozen (and thawed before the call), half the time with its dirty page cache
    # left as it is, which only snapbackd's own suspend (flush and freeze) puts on the disk
    # before the snapshot is taken.
    rnd frozen 2
    pause_load
    if [ $frozen = 1 ]; then fsfreeze --freeze $MNT; fi
    fast_manifest $MNT > /tmp/snap.man
    region_read W /tmp/Wf.txt /tmp/Wf.next
    w_replay /tmp/Wf.txt /tmp/Wf
    ledger_view /tmp/snap.man > /tmp/snap.view
    ledger_check /tmp/snap.view "the tree for the snapshot in boot $BOOT" /tmp/Wf > /tmp/check.log ||
      lose fsyncd-files-at-snapshot "$(head -n 5 /tmp/check.log | tr '\n' ' ')"
    if [ $frozen = 1 ]; then fsfreeze --unfreeze $MNT; fi
    echo "VM-INFO: snapshot with the manifest read $( [ $frozen = 1 ] && echo "frozen" || echo "unfrozen, $(awk '/^Dirty:/ { print $2, $3 }' /proc/meminfo) dirty")"
    slot_write "$SLOT_NEXT" /tmp/snap.man
    rec M M "$SLOT_NEXT" $(cat /tmp/snap.man.rec)
    rec M I snapshot "$SLOT_NEXT"
    if [ $cut = 1 ]; then rnd t 1200; arm_cut "$t"; fi
    t0=$(now_ns)
    out="$(busctl call $BUS $MGR $BUS.Manager Snapshot 'assa{sv}' 1 $VOL "power-cuts boot $BOOT" 0 2>&1)" ||
      lose snapshot-call "Snapshot failed: $out"
    resume_load
    echo "VM-INFO: the Snapshot call took $((($(now_ns) - t0) / 1000000)) ms"
    id=$(echo "$out" | sed -n "s#^o \"$SNAP/\([0-9]*\)\"\$#\1#p")
    [ -n "$id" ] || lose snapshot-call "Snapshot answered $out"
    rec M C snapshot "$SLOT_NEXT" "$id"
    rnd t 2000; settle $((t + 300))
    ;;
  delete)
    start_load
    rnd t 1500; usleep $(((t + 200) * 1000))
    pick_active
    rec M O "$BOOT" delete
    rec M I delete "$ID"
    if [ $cut = 1 ]; then rnd t 1500; arm_cut "$t"; fi
    out="$(busctl call $BUS $MGR $BUS.Manager Delete o $SNAP/$ID 2>&1)" || lose delete-call "Delete of set $ID: $out"
    rec M C delete "$ID"
    rnd t 1500; settle $((t + 300))
    ;;
  rollback)
    # the volume unmounted: the merge starts now, the pool slowed so the cut lands in it
    pick_active
    rnd m 6; churn $((m + 1))
    umount_data
    rnd d 3; delay=$(echo "10 20 40" | cut -d' ' -f$((d + 1)))
    [ "$delay" = 0 ] || pool_delay "$delay"
    rnd mode 2; rnd t 4000; rnd p 100
    rec M O "$BOOT" rollback
    rec M I rollback "$ID"
    if [ $cut = 1 ] && [ $mode = 0 ]; then arm_cut "$t"; fi
    echo "VM-INFO: rollback of set $ID, pool delay $delay ms, cut $( [ $mode = 0 ] && echo "at $t ms" || echo "at $p % merged")"
    out="$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/$ID 0 2>&1)" || lose rollback-call "Rollback of set $ID: $out"
    [ "$out" = 's "merging"' ] || lose rollback-call "Rollback of the unmounted volume answered $out"
    r0=$(merge_left)
    rec M C rollback "$ID" merging "${r0:-0}"
    if [ $cut = 1 ] && [ $mode = 1 ]; then
      target=$(( ${r0:-0} * (100 - p) / 100 ))
      while left=$(merge_left) && [ -n "$left" ] && [ "$left" -gt "$target" ]; do usleep 20000; done
      echo "VM-INFO: cutting at $(dm status snapback-$VOL)"
      cut_now
    fi
    wait_gone "$ID" 600 > /tmp/wait.log 2>&1 || lose merge-finishes "set $ID: $(cat /tmp/wait.log)"
    [ "$delay" = 0 ] || pool_delay 0
    settle 0
    ;;
  rollback-sched)
    # mounted and written to: the rollback waits for the next boot's activation
    rnd m 6; churn $((m + 1))
    start_load
    rnd t 1500; usleep $(((t + 200) * 1000))
    pick_active
    rec M O "$BOOT" rollback-sched
    rec M I rollback "$ID"
    if [ $cut = 1 ]; then rnd t 1500; arm_cut "$t"; fi
    out="$(busctl call $BUS $MGR $BUS.Manager Rollback 'oa{sv}' $SNAP/$ID 0 2>&1)" || lose rollback-call "Rollback of set $ID: $out"
    [ "$out" = 's "scheduled"' ] || lose rollback-call "Rollback of the mounted volume answered $out"
    rec M C rollback "$ID" scheduled -
    rnd t 1500; settle $((t + 300))
    ;;
esac

# ---- the operation finished without a cut: a clean shutdown
stop_load
rec M E "$BOOT" "$op"
[ $MOUNTED = 0 ] || umount_data
stop_daemon
