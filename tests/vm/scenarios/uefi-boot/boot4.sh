# Boot 4: the one-shot entry `b` (the old kernel), although loader.conf still says `c`; systemd-boot
# deleted the variable when it read it, so the boot after this one is `c` again.
. /snapback/uefi-lib.sh
. /in/kernels
check cmdline-has-entry-b-marker grep -qw uefi.marker=entry-b /proc/cmdline
check_eq kernel-is-old "$old" "$(uname -r)"
efivars_mount
check_eq loader-selected-b-once b.conf "$(loader_var LoaderEntrySelected)"
check oneshot-variable-consumed test ! -e "$EFIVARS/LoaderEntryOneShot-$LOADER_GUID"
esp_mount /efi
check_eq default-still-c "default c.conf" "$(grep '^default' /efi/loader/loader.conf)"
umount /efi
