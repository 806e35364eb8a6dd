# Helpers for every boot of uefi-dracut-root, both kinds:
#  - harness boots (1, 3, 5): the harness initramfs, booted through the `vm-setup` entry the
#    host adds for them; "/" is the root volume mounted at /mnt/root, the ESP at /boot;
#  - system boots (2, 4): the machine's own entries, the kernel with its dracut initramfs, root
#    on /dev/mapper/snapback-root; the root's /sbin/init (rootfs-init) runs the boot script
#    with the ESP mounted read-only at /boot.
. /in/kernels          # old= new= (kernel versions), mid= (machine id)

# The entry the host adds for harness boots; the machine's own are "$mid-$KVER.conf".
SETUP_ENTRY=vm-setup.conf

# root_manifest DIR : the system's files (a root file system at DIR) as "type path attributes
# hash" lines, sorted; mount points the boots use, lost+found and /vmtest (where the expected
# manifest is kept, inside the tree) are left out. One stat and one sha256sum for all files:
# a few processes per file cost seconds under emulation.
root_manifest() {
  (cd "$1" && find . -mindepth 1 \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run \
      -o -path ./tmp -o -path ./boot -o -path ./scenario -o -path ./in -o -path ./out \
      -o -path ./vmtest -o -path ./lost+found \) -prune -o -print | LC_ALL=C sort > /tmp/manifest.paths
   xargs -r stat -c '%n|%F|%s %a %u:%g' < /tmp/manifest.paths > /tmp/manifest.stat
   grep '|regular file|' /tmp/manifest.stat | cut -d'|' -f1 | xargs -r sha256sum > /tmp/manifest.sha
   # (awk runs no commands: the system's root has no /bin/sh for it)
   grep '|symbolic link|' /tmp/manifest.stat | cut -d'|' -f1 | while read -r p; do
     echo "$p|$(readlink "$p")"; done > /tmp/manifest.links
   awk -F'|' 'BEGIN { while ((getline l < "/tmp/manifest.sha") > 0) sha[substr(l, 67)] = substr(l, 1, 64)
                      while ((getline l < "/tmp/manifest.links") > 0) { split(l, w, "|"); to[w[1]] = w[2] } }
     $2 == "regular file" { print "F " $1 " " $3 " " sha[$1]; next }
     $2 == "directory" { split($3, a, " "); print "D " $1 " " a[2] " " a[3]; next }
     $2 == "symbolic link" { print "L " $1 " -> " to[$1]; next }
     { print "? " $1 }' /tmp/manifest.stat)
}

# boot_state : the managed part of the ESP (mounted at /boot) as "sha256  path", sorted:
# loader.conf, the entries (snapback's own excluded) and the kernel directories. The host reads
# the same from the image with esp_state (host-steps.sh).
boot_state() {
  (cd /boot && find loader "$mid" -type f ! -name 'snapback-*' | LC_ALL=C sort | xargs -r sha256sum)
}

# dm_target NAME : the target type of a dm device's (first) table line
dm_target() { dmsetup table "$1" | awk '{print $3; exit}'; }

# entry_field FILE KEY : every value of KEY in a BLS entry, one a line
entry_field() { sed -n "s/^$2 //p" "$1"; }

# file_sha PATH : sha256 of a file
file_sha() { sha256sum < "$1" | cut -c1-64; }
