# A rule for whoever builds the device stack: a snapshot-origin splits writes at the smallest
# chunk size of its snapshots as known at its last resume. Create the snapshot while the origin is
# already active and skip the origin's suspend/resume, and a 64 KiB origin write only copies the
# first 4 KiB chunk out: the snapshot silently shows new data. The kernel backend must resume
# (or reload) every origin after its snapshots are created — which the suspend/resume of a
# snapshot set does.
size=$(sectors /dev/disk/origin)
dd if=/dev/urandom of=/dev/disk/origin bs=64k count=64 oflag=direct 2>/dev/null
before=$(sha /dev/disk/origin)

dm create origin --table "0 $size snapshot-origin /dev/disk/origin"
dm create snap --table "0 $size snapshot /dev/disk/origin /dev/disk/cow P 8"
dd if=/dev/zero of=/dev/mapper/origin bs=64k count=1 oflag=direct 2>/dev/null
check_ne without-resume-snapshot-is-wrong "$before" "$(sha /dev/mapper/snap)"
check_eq without-resume-only-first-chunk-copied "0 $size snapshot 24/16384 16" "$(dm status snap)"
dm remove snap; dm remove origin
dd if=/dev/zero of=/dev/disk/cow bs=4k count=1 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/disk/origin bs=64k count=64 oflag=direct 2>/dev/null
before=$(sha /dev/disk/origin)

dm create origin --table "0 $size snapshot-origin /dev/disk/origin"
dm create snap --table "0 $size snapshot /dev/disk/origin /dev/disk/cow P 8"
dm suspend origin; dm resume origin
dd if=/dev/zero of=/dev/mapper/origin bs=64k count=1 oflag=direct 2>/dev/null
check_eq with-resume-snapshot-is-right "$before" "$(sha /dev/mapper/snap)"
check_eq with-resume-every-chunk-copied "0 $size snapshot 144/16384 16" "$(dm status snap)"
