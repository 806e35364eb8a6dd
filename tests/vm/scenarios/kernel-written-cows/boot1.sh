# The kernel writes a COW per chunk size from a random workload (writes of 1..64 sectors through
# the origin and through the snapshot), then merges it itself. Everything it wrote goes to /out
# for the engine's compatibility fixtures (daemon/engine/tests/fixtures/generate.sh).
. /in/expected.env
for cs in 8 32 128; do
  eval "status_want=\$STATUS_$cs view_want=\$SNAPSHOT_VIEW_$cs origin_want=\$ORIGIN_FINAL_$cs"
  mkdir -p /out/chunk$cs
  dm create snap$cs --table "0 8192 snapshot /dev/disk/origin$cs /dev/disk/cow$cs P $cs"
  dm create origin$cs --table "0 8192 snapshot-origin /dev/disk/origin$cs"
  t0=$(now_ns)
  while read -r kind s c p; do
    if [ "$kind" = origin ]; then dev=/dev/mapper/origin$cs; else dev=/dev/mapper/snap$cs; fi
    dd if=/in/pool of=$dev bs=512 skip=$p seek=$s count=$c oflag=direct conv=notrunc 2>/dev/null
  done < /in/workload-$cs.txt
  echo "VM-INFO: chunk $cs workload took $((($(now_ns) - t0) / 1000000)) ms"
  status="$(dm status snap$cs)"
  echo "$status" > /out/chunk$cs/status.txt
  check_eq chunk$cs/status-matches-model "$status_want" "$status"
  sha /dev/mapper/snap$cs > /out/chunk$cs/snapshot-view.sha256
  check_eq chunk$cs/snapshot-view-matches-model "$view_want" "$(cat /out/chunk$cs/snapshot-view.sha256)"
  check_eq chunk$cs/origin-matches-model "$origin_want" "$(sha /dev/mapper/origin$cs)"
  dm remove origin$cs
  dm remove snap$cs
  dd if=/dev/disk/cow$cs of=/out/chunk$cs/cow.img bs=1M 2>/dev/null
  dd if=/dev/disk/origin$cs of=/out/chunk$cs/origin-final.img bs=1M 2>/dev/null
  if [ $cs = 8 ]; then   # a second copy, merged in boot 2 until the power goes
    dd if=/dev/disk/origin8 of=/dev/disk/origin8-cut bs=1M oflag=direct 2>/dev/null
    dd if=/dev/disk/cow8 of=/dev/disk/cow8-cut bs=1M oflag=direct 2>/dev/null
  fi

  # the kernel's own merge of that COW into that origin
  dm create origin$cs --table "0 8192 snapshot-merge /dev/disk/origin$cs /dev/disk/cow$cs P $cs"
  check chunk$cs/kernel-merge-finishes wait_merged origin$cs 120
  dm status origin$cs > /out/chunk$cs/merged-status.txt
  sha /dev/mapper/origin$cs > /out/chunk$cs/merged-origin.sha256
  check_eq chunk$cs/kernel-merge-gives-snapshot-view "$view_want" "$(cat /out/chunk$cs/merged-origin.sha256)"
  dm remove origin$cs
done
