# Helpers for the systemd-units boots; the shared ones (prop, in_order, journal_has,
# no_hardening_errors, main_pid, bus_pid, tree, upgrade, same_tree, in_unit_cgroup, …) are in
# guest/systemd/systemd-lib.sh, shared with systemd-userspace.

. /snapback/systemd-lib.sh

target_of() { dmsetup table "snapback-$1" | awk '{print $3}'; }

keep_save() { (cd /tmp/keep && tar -cf /dev/disk/keep .); }
keep_load() { mkdir -p /tmp/keep && tar -xf /dev/disk/keep -C /tmp/keep; }
