# Boot 2: entry `b` (the host changed the default): the old kernel with b's options. Then the
# running system writes a new entry `c` onto the ESP and makes it the default, as the product will.
. /snapback/uefi-lib.sh
. /in/kernels
check cmdline-has-entry-b-marker grep -qw uefi.marker=entry-b /proc/cmdline
check cmdline-not-entry-a grep -vqw uefi.marker=entry-a /proc/cmdline
check_eq kernel-is-old "$old" "$(uname -r)"
check_eq harness-params-boot-number 2 "$(sed -n 's/.*vm\.boot=\([0-9]*\).*/\1/p' /vm-params)"
efivars_mount
check_eq loader-selected-b b.conf "$(loader_var LoaderEntrySelected)"
esp_mount /efi
cp /in/c.conf /efi/loader/entries/c.conf
sed -i 's/^default .*/default c.conf/' /efi/loader/loader.conf
umount /efi
# read back through a fresh mount: what the next boot's firmware will see
esp_mount /efi
check guest-wrote-entry-c cmp /in/c.conf /efi/loader/entries/c.conf
check_eq guest-set-default-c "default c.conf" "$(grep '^default' /efi/loader/loader.conf)"
umount /efi
