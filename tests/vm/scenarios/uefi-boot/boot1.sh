# Boot 1: systemd-boot's default entry `a` (loader.conf `default a`): the new kernel with a's options.
. /snapback/uefi-lib.sh
. /in/kernels
check firmware-is-uefi test -d /sys/firmware/efi
check cmdline-has-entry-a-marker grep -qw uefi.marker=entry-a /proc/cmdline
check cmdline-not-entry-b grep -vqw uefi.marker=entry-b /proc/cmdline
check_eq kernel-is-new "$new" "$(uname -r)"
check_eq harness-params-boot-number 1 "$(sed -n 's/.*vm\.boot=\([0-9]*\).*/\1/p' /vm-params)"
efivars_mount
check_eq loader-is-systemd-boot systemd-boot "$(loader_var LoaderInfo | cut -d' ' -f1)"
check_eq loader-selected-a a.conf "$(loader_var LoaderEntrySelected)"
echo "VM-INFO: LoaderInfo: $(loader_var LoaderInfo); cmdline: $(cat /proc/cmdline)"
esp_mount /efi
check_eq esp-loader-conf-default "default a.conf" "$(grep '^default' /efi/loader/loader.conf)"
check esp-has-both-kernels test -f "/efi/$(cat /etc/machine-id)/$old/linux" -a -f "/efi/$(cat /etc/machine-id)/$new/linux"
umount /efi
