# Boot 3: the entry the guest wrote in boot 2 (`c`: the new kernel, its rollback option). Then
# the running system asks systemd-boot for entry `b` for the next boot only (LoaderEntryOneShot,
# as `bootctl set-oneshot` does), leaving loader.conf's default at `c`.
. /snapback/uefi-lib.sh
. /in/kernels
check cmdline-has-entry-c-marker grep -qw uefi.marker=entry-c /proc/cmdline
check cmdline-has-rollback-option grep -qw snapback.rollback=7 /proc/cmdline
check_eq kernel-is-new "$new" "$(uname -r)"
efivars_mount
check_eq loader-selected-c c.conf "$(loader_var LoaderEntrySelected)"
set_loader_var LoaderEntryOneShot b.conf
check_eq oneshot-variable-written b.conf "$(loader_var LoaderEntryOneShot)"
