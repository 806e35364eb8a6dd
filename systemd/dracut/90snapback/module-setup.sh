#!/bin/bash
# dracut module: assemble snapback volumes in the initramfs, so that a root filesystem on a
# snapback volume (root=/dev/mapper/snapback-<name>) can be mounted, and a rollback scheduled
# for this boot starts merging before root is mounted.
#
# SNAPBACKD and SNAPBACK_CONFIG name the daemon binary and the configuration to put into the
# initramfs (defaults: the installed ones); the VM test builds an image from the tree with them.

snapback_binary() { echo "${SNAPBACKD:-/usr/libexec/snapbackd}"; }
snapback_config() { echo "${SNAPBACK_CONFIG:-/etc/snapback/snapback.toml}"; }

check() {
    require_binaries "$(snapback_binary)" || return 1
    # Only where snapback is configured; "255" means: include only when asked for.
    [ -f "$(snapback_config)" ] || return 255
    return 0
}

depends() {
    echo dm
    return 0
}

installkernel() {
    instmods dm-mod dm-snapshot dm-bufio
}

install() {
    # In the initramfs it is on PATH as /usr/bin/snapbackd.
    inst_binary "$(snapback_binary)" /usr/bin/snapbackd
    inst_simple "$(snapback_config)" /etc/snapback/snapback.toml
    # The backing devices exist once udev has settled; the volume device (the root device
    # dracut waits for) appears only after activation. A pre-mount hook would run too late:
    # dracut reaches pre-mount only once the root device exists.
    inst_hook initqueue/settled 50 "$moddir/snapback-activate.sh"
}
