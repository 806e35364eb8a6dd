#!/usr/bin/python3
# Runs one hook of a dnf5 actions file the way libdnf5's actions plugin (1.4, plain mode) does,
# so the snapback actions file can be tested without dnf5 (not packaged in Debian 12):
#
# - lines `callback:package_filter:direction:options:command`, in file order;
# - an empty filter runs the command once; a filter runs it once per matching transaction
#   package (glob on name or NEVRA), all substitutions of one line made before any runs;
# - direction `in` = actions I U D R, `out` = E O, none = all (? included);
# - the command is split on unescaped spaces, ${pid} ${conf.X} ${tmp.X} ${pkg.name|nevra|action|...}
#   substituted per argument, then backslash escapes removed; an unknown variable skips the
#   action (logged); identical commands run once per hook;
# - stdout lines: tmp.X=V sets, tmp.X unsets, log.LEVEL=M logs, error=M and a non-zero exit are
#   errors: logged with raise_error=0, fatal with raise_error=1 (exit status 3 here, the way
#   dnf5 stops the transaction).
#
# Packages come on stdin as "ACTION NAME NEVRA" lines (check_transaction refuses a list dnf5 would
# not send). A per-package line runs once per matching package in dnf5's query order, which is
# not the order of the transaction: the installed system's packages (E, O, ?) first, then the
# repositories' (I, U, D, R), each group in the order given here (standing in for solvable ids).
# tmp variables persist in --state between the pre_transaction and post_transaction runs, as
# they do within one dnf5 process.
import argparse
import fnmatch
import json
import os
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--hook", required=True)
ap.add_argument("--pid", required=True)
ap.add_argument("--state", required=True)
ap.add_argument("--replace", action="append", default=[], help="OLD=NEW in commands")
ap.add_argument("--conf", action="append", default=[], help="KEY=VALUE: dnf5's ${conf.KEY}")
ap.add_argument("file")
args = ap.parse_args()

conf = dict(c.split("=", 1) for c in args.conf)
tmp = {}
if os.path.exists(args.state):
    with open(args.state) as f:
        tmp = json.load(f)

packages = []
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 3:
        packages.append({"action": parts[0], "name": parts[1], "nevra": parts[2]})

# dnf5 5.2.12.0's letters, libdnf5/transaction/transaction_item_action.cpp
# (transaction_item_action_to_letter): INSTALL I, UPGRADE U, DOWNGRADE D, REINSTALL R, REMOVE E,
# REPLACED O, REASON_CHANGE ?. Inbound/outbound (transaction_item_action_is_inbound/_outbound in
# the same file) pick the packages of `in`/`out` lines; a line without a direction gets every
# transaction package, ? included (libdnf5-plugins/actions/actions.cpp, on_transaction).
IN = set("IUDR")
OUT = set("EO")
LETTERS = IN | OUT | {"?"}


def check_transaction(pkgs):
    """Refuses a package list dnf5 5.2 never sends, so the test cannot drift from dnf5 again.

    libdnf5/base/transaction.cpp, Transaction::Impl::set_transaction (5.2.12.0, lines 700-735):
    make_transaction_package puts the old package of an upgrade, downgrade or reinstall into the
    solver's replaced set (libsolv lists it among the package's obsoletes), and an obsoleted
    package of another name the same way: both become REPLACED (O). So the old half of an
    upgrade is an O, never an E. The transaction's own order (installs ... removes, replaced,
    reason changes) does not reach the actions: see query_order.
    """
    for p in pkgs:
        if p["action"] not in LETTERS:
            sys.exit("dnf5 has no action letter %r" % p["action"])
    outgoing = {p["name"] for p in pkgs if p["action"] == "O"}
    incoming = {p["name"] for p in pkgs if p["action"] in ("U", "D", "R")}
    for p in pkgs:
        if p["action"] == "E" and p["name"] in incoming:
            sys.exit("dnf5 never sends the old half of %s as E" % p["name"])
    for p in pkgs:
        if p["action"] in ("U", "D", "R") and p["name"] not in outgoing:
            sys.exit("dnf5 sends the replaced %s as O with the %s" % (p["name"], p["action"]))


def query_order(pkgs):
    """The packages in the order dnf5 runs a per-package line for them.

    libdnf5-plugins/actions/actions.cpp (5.2.12.0), on_transaction: the packages of a line are a
    PackageQuery, iterated by solvable id. RepoSack::Impl::update_and_load_repos
    (libdnf5/repo/repo_sack.cpp) loads the system repository first, so installed packages (an
    E, the O of an upgrade, a reason change) come before every package from a repository:
    real dnf5 passes an upgrade as O then U (tests/dnf/real-dnf5).
    """
    return [p for p in pkgs if p["action"] in OUT | {"?"}] + [p for p in pkgs if p["action"] in IN]


check_transaction(packages)


def split(s):
    out, cur, escape = [], "", False
    for ch in s:
        if ch == " " and not escape:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
        escape = (not escape) and ch == "\\"
    if cur:
        out.append(cur)
    return out


def unescape(s):
    table = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    out, escape = "", False
    for ch in s:
        if escape:
            out += table.get(ch, ch)
            escape = False
        elif ch == "\\":
            escape = True
        else:
            out += ch
    return out


def substitute(arg, pkg):
    out, pos = "", 0
    while True:
        start = arg.find("${", pos)
        if start < 0:
            return out + arg[pos:]
        out += arg[pos:start]
        end = arg.find("}", start)
        if end < 0:
            raise KeyError(arg[start:])
        name = arg[start + 2 : end]
        if name == "pid":
            value = args.pid
        elif name.startswith("conf.") and name[5:] in conf:
            value = conf[name[5:]]
        elif name.startswith("tmp.") and name[4:] in tmp:
            value = tmp[name[4:]]
        elif name.startswith("pkg.") and pkg is not None and name[4:] in pkg:
            value = pkg[name[4:]]
        else:
            raise KeyError(name)
        out += value
        pos = end + 1


errors_logged = 0


def action_error(raise_error, message):
    global errors_logged
    if raise_error:
        print("action-error: " + message)
        save()
        sys.exit(3)
    print("logged-error: " + message)
    errors_logged += 1


def run(cmd, raise_error):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("tmp."):
            if "=" in line:
                k, v = line[4:].split("=", 1)
                tmp[k] = v
            else:
                tmp.pop(line[4:], None)
        elif line.startswith("log."):
            print("log: " + line[4:])
        elif line.startswith("error="):
            action_error(raise_error, line[len("error="):])
        else:
            action_error(raise_error, "bad output line: " + line)
    if proc.returncode != 0:
        action_error(raise_error, "Exit code: %d" % proc.returncode)


def save():
    with open(args.state, "w") as f:
        json.dump(tmp, f)


done = set()
with open(args.file) as f:
    for raw in f:
        line = raw.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        hook, pkg_filter, direction, options, command = line.split(":", 4)
        if hook != args.hook:
            continue
        opts = dict(o.split("=", 1) for o in split(options))
        unknown = set(opts) - {"enabled", "raise_error"}
        if unknown:
            sys.exit("unknown option(s) %s in: %s" % (sorted(unknown), line))
        raise_error = opts.get("raise_error", "0") == "1"
        for r in args.replace:
            old, new = r.split("=", 1)
            command = command.replace(old, new)
        words = split(command)
        if pkg_filter == "":
            targets = [None]
        else:
            allowed = IN if direction == "in" else OUT if direction == "out" else LETTERS
            targets = [
                p
                for p in query_order(packages)
                if p["action"] in allowed
                and (fnmatch.fnmatchcase(p["name"], pkg_filter)
                     or fnmatch.fnmatchcase(p["nevra"], pkg_filter))
            ]
        to_run = []
        for pkg in targets:
            try:
                cmd = [unescape(substitute(w, pkg)) for w in words]
            except KeyError as e:
                print("logged-error: unknown variable %s" % e)
                break
            if tuple(cmd) not in done:
                done.add(tuple(cmd))
                to_run.append(cmd)
        for cmd in to_run:
            run(cmd, raise_error)
save()
