#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: snapback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapback_set
short_description: Take or delete a named snapback snapshot set
version_added: "0.1.0"
description:
  - Takes a snapshot set of volumes managed by snapbackd on the target, or deletes one.
  - The set is identified by C(name), which the module keeps in the set's userdata under the
    key C(ansible.name); running the task again finds that set instead of taking another one.
  - The module talks to snapbackd only through C(snapbackctl --json) on the target. A refusal of
    the daemon (no room in the pool, a set that is merging, not authorized) fails the task with
    the daemon's sentence as its message.
options:
  name:
    description:
      - The name of the set, kept in its userdata as C(ansible.name).
      - Required unless C(state=absent) is given with C(id).
    type: str
  id:
    description:
      - With C(state=absent), delete the set with this id instead of looking it up by name.
    type: int
  state:
    description:
      - C(present) takes the set unless one with C(name) exists.
      - C(absent) deletes every set with C(name) (or the set C(id)). snapbackd refuses to delete
        a set whose rollback is scheduled or running.
    type: str
    choices: [present, absent]
    default: present
  description:
    description:
      - "The set's description. Defaults to C(ansible: NAME)."
      - Only used when the set is taken; an existing set keeps its description.
    type: str
  volumes:
    description:
      - The volumes to snapshot, by their names in C(snapback.toml). Empty means every volume
        configured with C(auto = true).
    type: list
    elements: str
    default: []
  userdata:
    description:
      - More userdata for the set (at most 64 entries with C(ansible.name), which it must not contain).
    type: dict
    default: {}
  important:
    description:
      - Mark the set important, so that snapbackd's cleanup policy keeps it.
    type: bool
    default: false
  cow_size:
    description:
      - Initial copy-on-write space per volume, like C(512M) or C(2G). Default from the volume's
        configuration.
    type: str
  snapbackctl:
    description:
      - The snapbackctl program on the target (name looked up in PATH, or a path).
    type: str
    default: snapbackctl
notes:
  - Set C(DBUS_SYSTEM_BUS_ADDRESS) with the C(environment) keyword to reach a snapbackd on a
    private bus.
  - Creating and deleting sets needs root (or a polkit rule); the module never asks for a password.
attributes:
  check_mode:
    support: full
    description: Reports the set it would take or the sets it would delete, and changes nothing.
  diff_mode:
    support: full
    description: Shows the set it would take (its options) or the ids of the sets it deletes.
author:
  - snapback contributors (@snapback)
"""

EXAMPLES = r"""
- name: Snapshot every auto volume before the upgrade
  snapback.snapback.snapback_set:
    name: before-upgrade-2024-06
    description: before dnf upgrade (ansible)
    userdata:
      ticket: CHG-1234

- name: Snapshot root only, important, with 2 GiB of COW space
  snapback.snapback.snapback_set:
    name: before-kernel
    volumes: [root]
    important: true
    cow_size: 2G

- name: Delete the set again
  snapback.snapback.snapback_set:
    name: before-upgrade-2024-06
    state: absent
"""

RETURN = r"""
snapshot:
  description: The set as C(snapbackctl --json show) describes it (schema C(snapbackctl/1)); null when there is none.
  returned: always
  type: dict
  sample:
    id: 3
    description: "ansible: before-upgrade"
    state: active
    volumes: [root]
    userdata: {ansible.name: before-upgrade}
    created: "2024-06-01T10:00:00Z"
    important: false
deleted:
  description: The ids of the sets deleted (or that would be, in check mode).
  returned: when C(state=absent)
  type: list
  elements: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.snapback.snapback.plugins.module_utils import snapbackctl as ctl


def present(module, sets):
    name = module.params["name"]
    existing = ctl.find_named(sets, name)
    if existing:
        return dict(changed=False, snapshot=existing[-1])
    userdata = dict(module.params["userdata"] or {})
    if ctl.NAME_KEY in userdata:
        module.fail_json(msg="userdata must not contain %s: the module keeps the name there" % ctl.NAME_KEY)
    userdata[ctl.NAME_KEY] = name
    description = module.params["description"]
    if description is None:
        description = "ansible: %s" % name
    wanted = dict(description=description, volumes=module.params["volumes"], userdata=userdata,
                  important=module.params["important"])
    diff = dict(before={}, after=wanted)
    if module.check_mode:
        return dict(changed=True, snapshot=None, diff=diff)
    args = ["snapshot", "--description", description]
    for key in sorted(userdata):
        args += ["--userdata", "%s=%s" % (key, userdata[key])]
    if module.params["important"]:
        args.append("--important")
    if module.params["cow_size"]:
        args += ["--cow-size", module.params["cow_size"]]
    args += ["--"] + list(module.params["volumes"])
    snapshot = ctl.run(module, args)[1]["snapshot"]
    return dict(changed=True, snapshot=snapshot, diff=diff)


def absent(module, sets):
    if module.params["id"] is not None:
        found = ctl.find_id(sets, module.params["id"])
        targets = [found] if found else []
    else:
        targets = ctl.find_named(sets, module.params["name"])
    ids = [s["id"] for s in targets]
    if not ids:
        return dict(changed=False, snapshot=None, deleted=[])
    diff = dict(before=dict(sets=ids), after=dict(sets=[]))
    if module.check_mode:
        return dict(changed=True, snapshot=targets[-1], deleted=ids, diff=diff)
    document = ctl.run(module, ["delete"] + [str(i) for i in ids])[1]
    return dict(changed=True, snapshot=targets[-1], deleted=document["deleted"], diff=diff)


def main():
    argument_spec = dict(
        name=dict(type="str"),
        id=dict(type="int"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        description=dict(type="str"),
        volumes=dict(type="list", elements="str", default=[]),
        userdata=dict(type="dict", default={}),
        important=dict(type="bool", default=False),
        cow_size=dict(type="str"),
    )
    argument_spec.update(ctl.COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "present", ["name"])],
        required_one_of=[("name", "id")],
        mutually_exclusive=[("name", "id")],
        supports_check_mode=True,
    )
    if module.params["id"] is not None and module.params["state"] == "present":
        module.fail_json(msg="id selects a set to delete; take a set with name")
    try:
        sets = ctl.list_sets(module)
        if module.params["state"] == "present":
            result = present(module, sets)
        else:
            result = absent(module, sets)
    except ctl.SnapbackctlError as e:
        ctl.fail(module, e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
