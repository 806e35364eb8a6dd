#!/usr/bin/python3
# A stand-in for snapbackd's Manager, for testing the dnf plugin alone (tests/dnf/run --standin).
#
# Implements only what the plugin calls: Manager.Snapshot and Manager.UpdateMetadata, plus
# ObjectManager.GetManagedObjects and the snapshot objects' properties so the test can read
# back what the plugin sent. It is NOT the daemon: the real test runs against snapbackd.
#
# Usage: standin.py [--refuse]   (on the bus named by DBUS_SYSTEM_BUS_ADDRESS)
#   --refuse         every Snapshot call fails with org.snapback.Snapback1.Error.Backend
#   --refuse-update  every UpdateMetadata call fails the same way
#   --slow SECONDS   Snapshot answers only after SECONDS
# Volumes other than "root" are refused with org.snapback.Snapback1.Error.NotFound.

import sys
import time

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

BUS_NAME = "org.snapback.Snapback1"
ROOT = "/org/snapback/Snapback1"
MANAGER = "org.snapback.Snapback1.Manager"
SNAPSHOT = "org.snapback.Snapback1.Snapshot"
PROPS = "org.freedesktop.DBus.Properties"
OM = "org.freedesktop.DBus.ObjectManager"


class Error(dbus.DBusException):
    def __init__(self, name, msg):
        super().__init__(msg, name="org.snapback.Snapback1.Error." + name)


class SnapshotSet(dbus.service.Object):
    def __init__(self, conn, ident, volumes, description, userdata, important):
        self.path = "%s/snapshot/%d" % (ROOT, ident)
        super().__init__(conn, self.path)
        self.props = {
            "Id": dbus.UInt32(ident),
            "Description": dbus.String(description),
            "Created": dbus.UInt64(int(time.time() * 1e6)),
            "Volumes": dbus.Array(volumes or ["root"], signature="s"),
            "State": dbus.String("active"),
            "UsedBytes": dbus.UInt64(0),
            "SizeBytes": dbus.UInt64(1 << 20),
            "MergeProgress": dbus.Double(0.0),
            "Userdata": dbus.Dictionary(userdata, signature="ss"),
            "Important": dbus.Boolean(important),
        }

    @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
    def Get(self, iface, name):
        return self.props[name]

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return dbus.Dictionary(self.props, signature="sv")


class Manager(dbus.service.Object):
    def __init__(self, conn, refuse, refuse_update, slow):
        super().__init__(conn, ROOT)
        self.conn = conn
        self.refuse = refuse
        self.refuse_update = refuse_update
        self.slow = slow
        self.sets = {}
        self.next_id = 1

    @dbus.service.method(MANAGER, in_signature="assa{sv}", out_signature="o")
    def Snapshot(self, volumes, description, options):
        if self.slow:
            time.sleep(self.slow)
        if self.refuse:
            raise Error("Backend", "stand-in told to refuse")
        for v in volumes:
            if str(v) != "root":
                raise Error("NotFound", "no volume named %s" % v)
        unknown = set(options) - {"userdata", "important", "cow-size"}
        if unknown:
            raise Error("InvalidArgument", "unknown options %s" % sorted(unknown))
        s = SnapshotSet(
            self.conn,
            self.next_id,
            [str(v) for v in volumes],
            str(description),
            {str(k): str(v) for k, v in options.get("userdata", {}).items()},
            bool(options.get("important", False)),
        )
        self.sets[s.path] = s
        self.next_id += 1
        return dbus.ObjectPath(s.path)

    @dbus.service.method(MANAGER, in_signature="osa{ss}a{sv}", out_signature="")
    def UpdateMetadata(self, path, description, userdata, options):
        if self.refuse_update:
            raise Error("Backend", "stand-in told to refuse updates")
        s = self.sets.get(str(path))
        if s is None:
            raise Error("NotFound", "no snapshot set %s" % path)
        if description:
            s.props["Description"] = dbus.String(description)
        # Merged into the set's userdata, as the daemon's Backend::update_metadata does.
        merged = dict(s.props["Userdata"])
        merged.update({str(k): str(v) for k, v in userdata.items()})
        s.props["Userdata"] = dbus.Dictionary(merged, signature="ss")

    @dbus.service.method(OM, in_signature="", out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return {
            dbus.ObjectPath(p): {SNAPSHOT: dbus.Dictionary(s.props, signature="sv")}
            for p, s in self.sets.items()
        }


def main():
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    name = dbus.service.BusName(BUS_NAME, bus, do_not_queue=True)
    argv = sys.argv[1:]
    slow = float(argv[argv.index("--slow") + 1]) if "--slow" in argv else 0.0
    Manager(bus, "--refuse" in argv, "--refuse-update" in argv, slow)
    print("standin: owning %s" % name.get_name(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
