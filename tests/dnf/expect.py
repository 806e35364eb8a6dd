#!/usr/bin/python3
# Asserts facts about snapbackd's snapshot sets as read over D-Bus (see snapshots.py).
#   --count N            exactly N snapshot sets exist
#   --last-desc TEXT     the newest set's description contains TEXT
#   --last-desc-is TEXT  ... is exactly TEXT
#   --last-ud KEY=VALUE  the newest set's userdata has KEY with exactly VALUE
#   --last-ud KEY~TEXT   ... KEY whose value contains TEXT
#   --last-no-ud KEY     ... has no KEY
#   --last-important yes|no
#   --last-volumes A,B   ... covers exactly these volumes
# Exits 1 with every failed assertion on stderr and the sets as JSON.
import argparse
import json
import subprocess
import sys
import os

ap = argparse.ArgumentParser()
ap.add_argument("--count", type=int)
ap.add_argument("--last-desc", action="append", default=[])
ap.add_argument("--last-desc-is")
ap.add_argument("--last-ud", action="append", default=[])
ap.add_argument("--last-no-ud", action="append", default=[])
ap.add_argument("--last-important", choices=["yes", "no"])
ap.add_argument("--last-volumes")
args = ap.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
sets = json.loads(subprocess.check_output([sys.executable, os.path.join(here, "snapshots.py")]))
failed = []
if args.count is not None and len(sets) != args.count:
    failed.append("expected %d snapshot sets, found %d" % (args.count, len(sets)))
last = sets[-1] if sets else None
checks_on_last = (args.last_desc or args.last_desc_is is not None or args.last_ud or args.last_no_ud or args.last_important
                  or args.last_volumes)
if checks_on_last and last is None:
    failed.append("no snapshot set to check")
elif last is not None:
    for text in args.last_desc:
        if text not in last["description"]:
            failed.append("description %r lacks %r" % (last["description"], text))
    if args.last_desc_is is not None and last["description"] != args.last_desc_is:
        failed.append("description %r, expected %r" % (last["description"], args.last_desc_is))
    ud = last["userdata"]
    for spec in args.last_ud:
        if "~" in spec and ("=" not in spec or spec.index("~") < spec.index("=")):
            key, text = spec.split("~", 1)
            if text not in ud.get(key, ""):
                failed.append("userdata[%r] = %r lacks %r" % (key, ud.get(key), text))
        else:
            key, value = spec.split("=", 1)
            if ud.get(key) != value:
                failed.append("userdata[%r] = %r, expected %r" % (key, ud.get(key), value))
    for key in args.last_no_ud:
        if key in ud:
            failed.append("userdata has %r = %r, expected none" % (key, ud[key]))
    if args.last_volumes is not None and last["volumes"] != args.last_volumes.split(","):
        failed.append("volumes = %s, expected %s" % (last["volumes"], args.last_volumes))
    if args.last_important is not None and last["important"] != (args.last_important == "yes"):
        failed.append("important = %s, expected %s" % (last["important"], args.last_important))
if failed:
    for f in failed:
        print("FAIL: " + f, file=sys.stderr)
    print(json.dumps(sets, indent=1), file=sys.stderr)
    sys.exit(1)
