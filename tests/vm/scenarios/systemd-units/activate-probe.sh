# ExecStartPost= of snapback-activate.service in boot 1 (a drop-in prepare.sh adds): runs under
# the unit's own confinement and prints, as one journal line of the unit, what it finds there.
# Nothing here may print the words no_hardening_errors looks for (refusals are only named).
st() { sed -n "s/^$1:\t//p" /proc/self/status; }
if (: > /activate-probe.tmp) 2>/dev/null; then root=writable; rm -f /activate-probe.tmp; else root=read-only; fi
if ls /root > /dev/null 2>&1; then home=visible; else home=hidden; fi
if (: < /dev/mapper/control) 2>/dev/null; then dm=opens; else dm=refused; fi
echo "activate-probe CapBnd=$(st CapBnd) NoNewPrivs=$(st NoNewPrivs) Seccomp=$(st Seccomp)" \
  "root=$root home=$home dm-control=$dm" \
  "mnt=$(readlink /proc/self/ns/mnt) net=$(readlink /proc/self/ns/net)"
