#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: snapback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapback_rollback
short_description: Roll volumes back to a snapback snapshot set, or cancel a scheduled rollback
version_added: "0.1.0"
description:
  - Asks snapbackd on the target to merge a snapshot set into its volumes.
  - snapbackd merges at once when the volumes are free, or schedules the merge for the next
    boot when one is in use (mounted); the result says which (C(scheduled), C(merging)).
    Reboot the host with M(ansible.builtin.reboot) when C(scheduled) is true.
  - A set whose rollback is already scheduled or running is left alone (C(changed=false)).
  - The module talks to snapbackd only through C(snapbackctl --json) on the target; a refusal
    (an invalid set, another rollback under way on a volume) fails the task with the daemon's
    sentence.
options:
  name:
    description:
      - The set, by the name M(snapback.snapback.snapback_set) gave it (the newest set of that name).
    type: str
  id:
    description:
      - The set, by id.
    type: int
  state:
    description:
      - C(rolled_back) starts (or schedules) the rollback.
      - C(cancelled) cancels a rollback scheduled for next boot; nothing to cancel is C(changed=false).
    type: str
    choices: [rolled_back, cancelled]
    default: rolled_back
  wait:
    description:
      - With C(state=rolled_back), wait until a merge that starts now has finished (the set is
        then gone and the volumes hold the snapshot's data). A scheduled rollback is not waited for.
    type: bool
    default: true
  snapbackctl:
    description:
      - The snapbackctl program on the target (name looked up in PATH, or a path).
    type: str
    default: snapbackctl
notes:
  - A merged set no longer exists; running the task again then fails with snapbackd's "not
    found" sentence, so guard rollbacks (for example in a C(rescue) block) rather than repeat them.
attributes:
  check_mode:
    support: full
    description: Reports what it would do and asks nothing of the daemon.
  diff_mode:
    support: none
    description: The change is a merge of a whole volume; no diff is shown.
author:
  - snapback contributors (@snapback)
"""

EXAMPLES = r"""
- name: Roll back to the set taken before the upgrade
  snapback.snapback.snapback_rollback:
    name: before-upgrade
  register: rollback

- name: Reboot when a volume was busy and the rollback waits for the next boot
  ansible.builtin.reboot:
  when: rollback.scheduled

- name: Cancel a scheduled rollback
  snapback.snapback.snapback_rollback:
    id: 7
    state: cancelled
"""

RETURN = r"""
id:
  description: The set's id.
  returned: success
  type: int
result:
  description: >-
    What snapbackd answered: C(merging) (started now), C(merged) (finished, with C(wait)),
    C(scheduled) (waits for next boot), C(cancelled), or the set's state when nothing was done.
  returned: success
  type: str
scheduled:
  description: The rollback waits for the next boot.
  returned: success
  type: bool
merging:
  description: The merge runs now (false once it has finished).
  returned: success
  type: bool
snapshot:
  description: The set before the call, as C(snapbackctl --json show) describes it.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.snapback.snapback.plugins.module_utils import snapbackctl as ctl

SCHEDULED = "merge-scheduled"
MERGING = "merging"


def find(module):
    if module.params["id"] is not None:
        # `show` gives the daemon's own "not found" sentence for a missing id.
        return ctl.run(module, ["show", str(module.params["id"])])[1]["snapshot"]
    named = ctl.find_named(ctl.list_sets(module), module.params["name"])
    if not named:
        raise ctl.SnapbackctlError("no snapshot set named %s (a merged set is gone)" % module.params["name"])
    return named[-1]


def outcome(snapshot, changed, result):
    return dict(changed=changed, id=snapshot["id"], result=result, snapshot=snapshot,
                scheduled=result == "scheduled", merging=result == "merging")


def rolled_back(module, snapshot):
    state = snapshot["state"]
    if state == SCHEDULED:
        return outcome(snapshot, False, "scheduled")
    if state == MERGING:
        return outcome(snapshot, False, "merging")
    if module.check_mode:
        # Whether it would merge now or at next boot is the daemon's call, made only when asked.
        return outcome(snapshot, True, "would-roll-back")
    args = ["rollback", str(snapshot["id"])]
    if module.params["wait"]:
        args.append("--wait")
    rc, document = ctl.run(module, args, accept=(ctl.EXIT_OK, ctl.EXIT_SCHEDULED))
    return outcome(snapshot, True, document["result"])


def cancelled(module, snapshot):
    if snapshot["state"] != SCHEDULED:
        return outcome(snapshot, False, snapshot["state"])
    if module.check_mode:
        return outcome(snapshot, True, "cancelled")
    ctl.run(module, ["cancel", str(snapshot["id"])])
    return outcome(snapshot, True, "cancelled")


def main():
    argument_spec = dict(
        name=dict(type="str"),
        id=dict(type="int"),
        state=dict(type="str", choices=["rolled_back", "cancelled"], default="rolled_back"),
        wait=dict(type="bool", default=True),
    )
    argument_spec.update(ctl.COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[("name", "id")],
        mutually_exclusive=[("name", "id")],
        supports_check_mode=True,
    )
    try:
        snapshot = find(module)
        if module.params["state"] == "rolled_back":
            result = rolled_back(module, snapshot)
        else:
            result = cancelled(module, snapshot)
    except ctl.SnapbackctlError as e:
        ctl.fail(module, e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
