# Helpers for scenario scripts, sourced before /scenario/boot.sh runs (under sh -e).
# Scenario scripts run as root in a busybox userland; see tests/vm/README.md.

# check NAME COMMAND... : PASS when COMMAND exits 0, FAIL with its last output lines otherwise.
check() {
  _name="$1"; shift
  if _out="$("$@" 2>&1)"; then
    echo "CHECK PASS $_name"
  else
    echo "CHECK FAIL $_name: $(echo "$_out" | tail -n 3 | tr '\n' ' ')(command: $*)"
  fi
  return 0
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
  if [ "$2" = "$3" ]; then echo "CHECK PASS $1"
  else echo "CHECK FAIL $1: expected '$2', got '$3'"; fi
  return 0
}

# check_ne NAME UNEXPECTED ACTUAL
check_ne() {
  if [ "$2" != "$3" ]; then echo "CHECK PASS $1"
  else echo "CHECK FAIL $1: value must differ from '$2'"; fi
  return 0
}

# figure NAME VALUE UNIT : a measured number, collected by run-all into work/figures.txt
figure() { echo "FIGURE $1 $2 $3"; }

# need_bin NAME : the scenario cannot go on without NAME (a project binary not built yet is a FAIL).
need_bin() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "CHECK FAIL need/$1: $1 is not in the initramfs (build it, then rerun)"
  exit 1
}

# power_cut : stops the VM at once, like pulling the plug: no sync, no clean shutdown, dirty
# page cache lost. sysrq "b" resets the machine immediately and qemu (-no-reboot) exits; the
# host also kills qemu when it reads the marker.
power_cut() {
  echo "VM-POWER-CUT"
  echo b > /proc/sysrq-trigger
  sleep 3600
}

# dm ARGS... : dmsetup without udev (none runs here); nodes appear in /dev/mapper.
dm() { dmsetup --noudevsync --verifyudev "$@"; }

sectors() { blockdev --getsz "$1"; }               # size of a block device in 512-byte sectors
sha() { sha256sum "$1" | cut -d' ' -f1; }          # sha256 of a file or a whole device
now_ns() { gnudate +%s%N; }                        # wall clock in nanoseconds
majmin() { stat -L -c '%t:%T' "$1" | { IFS=: read -r a b; echo "$((0x$a)):$((0x$b))"; }; }

# wait_merged DEV [TIMEOUT_S] : wait until snapshot-merge's status shows allocated == metadata
wait_merged() {
  _t=0
  while :; do
    # shellcheck disable=SC2046 # the status line split into fields on purpose
    set -- "$1" "${2:-300}" $(dm status "$1")
    # status: start len snapshot-merge allocated/total metadata
    _alloc="${6%/*}"; _meta="$7"
    [ "$_alloc" = "$_meta" ] && return 0
    [ "$_t" -ge "$(($2 * 10))" ] && { echo "merge did not finish: $(dm status "$1")"; return 1; }
    sleep 0.1; _t=$((_t + 1))
  done
}

# slow_device NAME DEV MS : /dev/mapper/NAME = DEV with every read and write delayed by MS ms
# (dm-delay), e.g. to make a kernel merge last long enough to cut the power in the middle of it
slow_device() { dm create "$1" --table "0 $(sectors "$2") delay $2 0 $3"; }
