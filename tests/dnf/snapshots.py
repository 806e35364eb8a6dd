#!/usr/bin/python3
# Prints snapbackd's snapshot sets as one JSON list, read over D-Bus (ObjectManager on the bus
# named by DBUS_SYSTEM_BUS_ADDRESS): [{"path", "id", "description", "userdata", "important", "volumes", "state"}],
# sorted by id. Used by tests/dnf/run to check what the dnf plugin created.
import json

import dbus

ROOT = "/org/snapback/Snapback1"
SNAPSHOT = "org.snapback.Snapback1.Snapshot"

bus = dbus.SystemBus()
om = dbus.Interface(
    bus.get_object("org.snapback.Snapback1", ROOT, introspect=False),
    "org.freedesktop.DBus.ObjectManager",
)
out = []
for path, ifaces in om.GetManagedObjects().items():
    props = ifaces.get(SNAPSHOT)
    if props is None:
        continue
    out.append(
        {
            "path": str(path),
            "id": int(props["Id"]),
            "description": str(props["Description"]),
            "userdata": {str(k): str(v) for k, v in props["Userdata"].items()},
            "important": bool(props["Important"]),
            "volumes": [str(v) for v in props["Volumes"]],
            "state": str(props["State"]),
        }
    )
print(json.dumps(sorted(out, key=lambda s: s["id"]), indent=1))
