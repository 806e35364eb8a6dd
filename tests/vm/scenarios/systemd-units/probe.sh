# mount-probe.service (boot 2): the device's table and status and the tree's manifest, taken
# right after mnt-data.mount, before local-fs.target.
. /snapback/snapbackd-lib.sh
mkdir -p /run/probe
dmsetup table snapback-data > /run/probe/table
dmsetup status snapback-data > /run/probe/status
manifest /mnt/data > /run/probe/manifest
