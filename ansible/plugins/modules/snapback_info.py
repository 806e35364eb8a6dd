#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: snapback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapback_info
short_description: Snapshot sets, volumes, pool usage and merges of snapbackd
version_added: "0.1.0"
description:
  - Reads what snapbackd on the target reports (C(snapbackctl --json status) and C(list)), namely
    the snapshot sets with their states, the volumes, the pool's usage, and the rollbacks that
    are scheduled or merging.
  - Each set gets a C(sets[].name) key, the name M(snapback.snapback.snapback_set) keeps in its
    userdata (null for sets taken otherwise), so that playbooks can select their own sets.
options:
  snapbackctl:
    description:
      - The snapbackctl program on the target (name looked up in PATH, or a path).
    type: str
    default: snapbackctl
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
author:
  - snapback contributors (@snapback)
"""

EXAMPLES = r"""
- name: What snapback holds
  snapback.snapback.snapback_info:
  register: snapback

- name: Stop when the pool is more than 80 % full
  ansible.builtin.assert:
    that: snapback.pool.used_bytes < snapback.pool.size_bytes * 0.8
    fail_msg: the snapback pool on {{ inventory_hostname }} is nearly full

- name: Stop when a rollback is still pending
  ansible.builtin.assert:
    that: snapback.pending_merges | length == 0
"""

RETURN = r"""
sets:
  description: The snapshot sets, oldest first (schema C(snapbackctl/1) keys, plus C(sets[].name)).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The set's id.
      type: int
      returned: always
    name:
      description: Its C(ansible.name) userdata, or null.
      type: str
      returned: always
    state:
      description: C(active), C(invalid), C(overflow), C(merge-scheduled), C(merging) or C(merge-failed).
      type: str
      returned: always
    description:
      description: The set's description.
      type: str
      returned: always
    created:
      description: When it was taken (RFC 3339 UTC).
      type: str
      returned: always
    volumes:
      description: Its volumes.
      type: list
      elements: str
      returned: always
    userdata:
      description: Its userdata.
      type: dict
      returned: always
    used_bytes:
      description: COW bytes in use.
      type: int
      returned: always
    size_bytes:
      description: COW bytes allocated.
      type: int
      returned: always
volumes:
  description: The configured volumes (C(name), C(device), C(backing), C(state), C(size_bytes), C(auto)).
  returned: always
  type: list
  elements: dict
pool:
  description: The pool (C(path), C(size_bytes), C(used_bytes)).
  returned: always
  type: dict
pending_merges:
  description: Ids of sets whose rollback waits for next boot.
  returned: always
  type: list
  elements: int
running_merges:
  description: Ids of sets merging now.
  returned: always
  type: list
  elements: int
backend:
  description: C(kernel) or C(userspace).
  returned: always
  type: str
version:
  description: snapbackd's version.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.snapback.snapback.plugins.module_utils import snapbackctl as ctl


def main():
    module = AnsibleModule(argument_spec=dict(ctl.COMMON_ARGS), supports_check_mode=True)
    try:
        status = ctl.status(module)
        sets = ctl.list_sets(module)
    except ctl.SnapbackctlError as e:
        ctl.fail(module, e)
    for s in sets:
        s["name"] = ctl.set_name(s)
    module.exit_json(
        changed=False,
        sets=sets,
        volumes=status["volumes"],
        pool=status["pool"],
        pending_merges=status["pending_merges"],
        running_merges=status["running_merges"],
        backend=status["backend"],
        version=status["version"],
    )


if __name__ == "__main__":
    main()
