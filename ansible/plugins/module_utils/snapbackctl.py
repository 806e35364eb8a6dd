# -*- coding: utf-8 -*-
# Copyright: snapback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the snapback modules reach snapbackd: `snapbackctl --json` on the target.

Every decision about snapshot sets (which state allows what, what is busy, what is refused) is
the daemon's; these helpers only run the client, check the versioned JSON schema and turn a
refusal into the task's failure message, worded as the daemon worded it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

SCHEMA = "snapbackctl/1"

# snapbackctl's exit statuses (docs/snapbackctl.md).
EXIT_OK = 0
EXIT_SCHEDULED = 3

# The userdata key that holds the name a playbook gives a set.
NAME_KEY = "ansible.name"

COMMON_ARGS = dict(
    snapbackctl=dict(type="str", default="snapbackctl"),
)


class SnapbackctlError(Exception):
    """snapbackctl failed; `message` is its own sentence (the daemon's refusal)."""

    def __init__(self, message, rc=None, cmd=None):
        super(SnapbackctlError, self).__init__(message)
        self.message = message
        self.rc = rc
        self.cmd = cmd


def _sentence(stderr, stdout, rc):
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    # snapbackctl prefixes its message with its name; the sentence after it is the daemon's.
    lines = [line[len("snapbackctl: "):] if line.startswith("snapbackctl: ") else line for line in lines]
    if lines:
        return "; ".join(lines)
    if stdout and stdout.strip():
        return stdout.strip()
    return "snapbackctl exited with status %s and no message" % rc


def run(module, args, accept=(EXIT_OK,)):
    """Runs `snapbackctl --json --no-ask-password ARGS`; returns (rc, document).

    An exit status outside `accept` raises SnapbackctlError with snapbackctl's sentence.
    """
    binary = module.params["snapbackctl"]
    path = module.get_bin_path(binary, required=False) if "/" not in binary else binary
    if not path:
        raise SnapbackctlError("snapbackctl (%s) was not found on the target: install snapback" % binary)
    cmd = [path, "--json", "--no-ask-password"] + list(args)
    rc, stdout, stderr = module.run_command(cmd, check_rc=False)
    if rc not in accept:
        raise SnapbackctlError(_sentence(stderr, stdout, rc), rc=rc, cmd=cmd)
    try:
        document = json.loads(stdout)
    except ValueError as e:
        raise SnapbackctlError("snapbackctl printed no JSON document (%s): %r" % (e, stdout[:200]), rc=rc, cmd=cmd)
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else None
        raise SnapbackctlError(
            "snapbackctl speaks schema %r, these modules read %r: update the collection" % (found, SCHEMA),
            rc=rc,
            cmd=cmd,
        )
    return rc, document


def list_sets(module):
    return run(module, ["list"])[1]["snapshots"]


def status(module):
    return run(module, ["status"])[1]


def set_name(snapshot):
    return (snapshot.get("userdata") or {}).get(NAME_KEY)


def find_named(sets, name):
    """The sets a playbook created under `name`, oldest first."""
    return sorted((s for s in sets if set_name(s) == name), key=lambda s: s["id"])


def find_id(sets, set_id):
    for s in sets:
        if s["id"] == set_id:
            return s
    return None


def fail(module, error, **result):
    result.setdefault("changed", False)
    if error.cmd:
        result["cmd"] = error.cmd
    if error.rc is not None:
        result["rc"] = error.rc
    module.fail_json(msg=error.message, **result)
