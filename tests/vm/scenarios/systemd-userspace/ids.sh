# file system UUIDs the scenario's fstab lines name (sourced by prepare.sh and lib.sh)
STATE_UUID=5a4b0001-0000-4000-8000-00000000005b   # /var/lib/snapback, on the "state" disk
FS_UUID=5a4b0002-0000-4000-8000-00000000da7a      # the ext4 made on the data volume's loop device
