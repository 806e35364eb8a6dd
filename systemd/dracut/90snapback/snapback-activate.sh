#!/bin/sh
# initqueue/settled hook: assemble snapback's dm stacks once (activation is idempotent, but
# the initqueue runs this on every pass).
type warn >/dev/null 2>&1 || . /lib/dracut-lib.sh

[ -e /run/snapback/activated ] && return 0 2>/dev/null
modprobe -q dm-snapshot
mkdir -p /run/snapback
# No waiting for late disks here (--device-timeout 0): the initqueue calls this hook again
# after every udev event until the root device exists, and a wait would hold the queue up.
if snapbackd activate --config /etc/snapback/snapback.toml --device-timeout 0; then
    : > /run/snapback/activated
else
    warn "snapback: volume activation failed; boot with rd.break=pre-mount and run 'snapbackd activate' to see why"
fi
