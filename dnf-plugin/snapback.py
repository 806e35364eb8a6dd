# snapback dnf4 plugin: a snapshot set before every package transaction.
#
# pre_transaction asks snapbackd (org.snapback.Snapback1 on the system bus) for a snapshot set of
# the configured volumes, described by the dnf command line, with the transaction's packages in
# its userdata. The transaction hook then records the outcome in the same set's userdata.
#
# Nothing here may break a dnf run, except what the admin asked for with `required = true`:
# then an unreachable or refusing daemon stops the transaction in pre_transaction, before rpm has
# changed anything. Every other failure is caught and logged as one warning.
#
# Copyright Contributors to snapback. SPDX-License-Identifier: GPL-2.0-or-later

import fnmatch
import logging
import sys

import dnf
import dnf.exceptions
import dnf.transaction

logger = logging.getLogger("dnf.plugin")

BUS_NAME = "org.snapback.Snapback1"
MANAGER_PATH = "/org/snapback/Snapback1"
MANAGER_IFACE = "org.snapback.Snapback1.Manager"

# Packages whose change makes a snapshot set `important` (cleanup keeps those longer): the
# kernel, the C library, the init system, the initramfs generator and the boot loaders.
DEFAULT_IMPORTANT = (
    "kernel kernel-* glibc glibc-common systemd systemd-udev systemd-boot* dracut "
    "grub2* shim*"
)

# userdata is stored in the pool's registry and shown by `snapbackctl show`: keep it small.
MAX_NAMES_PER_LIST = 40
MAX_LIST_CHARS = 1500
MAX_DESCRIPTION_CHARS = 500

# Transaction item actions grouped the way people read a transaction summary.
# As the dnf5 actions file records them (snapback-dnf5): a package that obsoletes others is an
# install (dnf5 passes it as I), a package it replaces is "obsoleted", not a removal.
_ACTION_GROUPS = (
    ("install", (dnf.transaction.PKG_INSTALL, dnf.transaction.PKG_OBSOLETE)),
    ("upgrade", (dnf.transaction.PKG_UPGRADE,)),
    ("downgrade", (dnf.transaction.PKG_DOWNGRADE,)),
    ("reinstall", (dnf.transaction.PKG_REINSTALL,)),
    ("remove", (dnf.transaction.PKG_REMOVE,)),
    ("obsoleted", (dnf.transaction.PKG_OBSOLETED,)),
)


def cap_list(names, max_names=MAX_NAMES_PER_LIST, max_chars=MAX_LIST_CHARS):
    """Space-separated names, cut to a sane size with an explicit '(+N more)' tail."""
    shown = []
    used = 0
    for name in names:
        if len(shown) >= max_names or used + len(name) + 1 > max_chars:
            break
        shown.append(name)
        used += len(name) + 1
    rest = len(names) - len(shown)
    text = " ".join(shown)
    if rest:
        text += " (+%d more)" % rest
    return text


def important_matches(names, patterns):
    """The package names that match an `important` glob, sorted."""
    return sorted({n for n in names for p in patterns if fnmatch.fnmatchcase(n, p)})


def summarize(items):
    """userdata for a transaction given as (group, name, nevra) tuples.

    Returns (userdata dict, list of all package names involved).
    """
    userdata = {}
    names = []
    for group, _actions in _ACTION_GROUPS:
        nevras = sorted(nevra for g, _n, nevra in items if g == group)
        if nevras:
            userdata["dnf.%s.count" % group] = str(len(nevras))
            userdata["dnf.%s" % group] = cap_list(nevras)
    for _g, name, _nevra in items:
        names.append(name)
    return userdata, names


def transaction_items(transaction):
    """(group, name, nevra) for each rpm item of a dnf transaction; skips what we don't group."""
    by_action = {}
    for group, actions in _ACTION_GROUPS:
        for action in actions:
            by_action[action] = group
    out = []
    for tsi in transaction:
        group = by_action.get(tsi.action)
        if group is None:
            # UPGRADED / DOWNGRADED / REINSTALLED are the old halves of pairs counted above.
            continue
        pkg = tsi.pkg
        out.append((group, pkg.name, str(pkg)))
    return out


def failed_items(transaction):
    """NEVRAs of items rpm reported as failed (state ERROR) after the transaction ran."""
    import libdnf.transaction

    failed = []
    for tsi in transaction:
        try:
            if tsi.state == libdnf.transaction.TransactionItemState_ERROR:
                failed.append(str(tsi.pkg))
        except Exception:  # an item without state is not evidence of failure
            continue
    return failed


def split_words(value):
    return [w for w in value.replace(",", " ").split() if w]


class Snapback(dnf.Plugin):
    name = "snapback"

    def __init__(self, base, cli):
        super(Snapback, self).__init__(base, cli)
        self.volumes = []
        self.required = False
        self.timeout = 120.0
        self.important_patterns = split_words(DEFAULT_IMPORTANT)
        self.snapshot_path = None
        self.description = ""
        self.userdata = {}

    def config(self):
        try:
            parser = self.read_config(self.base.conf)
            if parser.has_section("main"):
                if parser.has_option("main", "volumes"):
                    self.volumes = split_words(parser.get("main", "volumes"))
                if parser.has_option("main", "required"):
                    self.required = parser.getboolean("main", "required")
                if parser.has_option("main", "timeout"):
                    self.timeout = parser.getfloat("main", "timeout")
                if parser.has_option("main", "important_packages"):
                    self.important_patterns = split_words(
                        parser.get("main", "important_packages")
                    )
        except Exception as e:
            # A broken config must not break dnf; the defaults are the safe choice.
            logger.warning("snapback: cannot read plugin configuration (%s); using defaults", e)

    def _command_line(self):
        cmd = getattr(self.cli, "cmdstring", None) if self.cli is not None else None
        if not cmd:
            cmd = " ".join(sys.argv)
        cmd = cmd.strip()
        if len(cmd) > MAX_DESCRIPTION_CHARS:
            cmd = cmd[: MAX_DESCRIPTION_CHARS - 3] + "..."
        return cmd

    def _manager(self):
        import dbus

        bus = dbus.SystemBus()
        obj = bus.get_object(BUS_NAME, MANAGER_PATH, introspect=False)
        return dbus.Interface(obj, MANAGER_IFACE)

    def pre_transaction(self):
        try:
            items = transaction_items(self.base.transaction)
        except Exception as e:
            self._fail("cannot read the transaction (%s)" % e)
            return
        if not items:
            return  # comps-only transactions change no files worth a snapshot
        try:
            import dbus

            userdata, names = summarize(items)
            important = important_matches(names, self.important_patterns)
            if important:
                userdata["dnf.important"] = cap_list(important)
            userdata["dnf.outcome"] = "unfinished"
            self.description = self._command_line()
            self.userdata = userdata
            options = {"userdata": dbus.Dictionary(userdata, signature="ss")}
            if important:
                options["important"] = dbus.Boolean(True)
            path = self._manager().Snapshot(
                dbus.Array(self.volumes, signature="s"),
                self.description,
                dbus.Dictionary(options, signature="sv"),
                timeout=self.timeout,
            )
            self.snapshot_path = str(path)
            logger.info("snapback: snapshot set %s taken before the transaction", path)
        except dnf.exceptions.Error:
            raise
        except Exception as e:
            self._fail("no snapshot was taken: %s" % _dbus_message(e))

    def _fail(self, message):
        if self.required:
            raise dnf.exceptions.Error(
                "snapback: %s; the transaction was stopped before changing anything because "
                "the snapback plugin is configured with required = 1 (snapback.conf)" % message
            )
        logger.warning("snapback: %s; the transaction goes on without a snapshot", message)

    def transaction(self):
        if self.snapshot_path is None:
            return
        try:
            import dbus

            failed = failed_items(self.base.transaction)
            userdata = dict(self.userdata)
            if failed:
                userdata["dnf.outcome"] = "failed"
                userdata["dnf.failed"] = cap_list(failed)
            else:
                userdata["dnf.outcome"] = "success"
            self._manager().UpdateMetadata(
                dbus.ObjectPath(self.snapshot_path),
                "",  # empty description keeps the one given at Snapshot time
                dbus.Dictionary(userdata, signature="ss"),
                dbus.Dictionary({}, signature="sv"),
                timeout=self.timeout,
            )
        except Exception as e:
            logger.warning(
                "snapback: could not record the outcome in %s: %s",
                self.snapshot_path,
                _dbus_message(e),
            )


def _dbus_message(e):
    """A D-Bus error as `Name: message`, anything else as its text."""
    get_name = getattr(e, "get_dbus_name", None)
    if get_name is not None:
        name = get_name()
        msg = e.get_dbus_message() if hasattr(e, "get_dbus_message") else str(e)
        return "%s: %s" % (name, msg)
    return str(e) or e.__class__.__name__
