# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit-test harness: the modules' main() against a scripted stand-in for snapbackctl.

The stand-in is an executable that records its argv and answers from a table the test wrote
(subcommand -> exit status, stdout, stderr), so a test checks exactly what the module asked
snapbackctl and what it made of the answer. Only the unit tests fake snapbackctl; the
integration test (tests/ansible/run) runs the real one against real snapbackd instances.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat
import sys

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

FAKE = r'''#!%(python)s
import json, sys
here = %(dir)r
args = sys.argv[1:]
with open(here + "/calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\n")
table = json.load(open(here + "/answers.json"))
words = [a for a in args if not a.startswith("--")]
answer = table.get(words[0] if words else "", [1, "", "snapbackctl: no answer scripted"])
sys.stdout.write(answer[1])
sys.stderr.write(answer[2])
sys.exit(answer[0])
'''


class Exit(Exception):
    pass


class Failed(Exception):
    pass


def doc(**body):
    out = {"schema": "snapbackctl/1"}
    out.update(body)
    return json.dumps(out)


def snapshot(set_id, name=None, state="active", important=False):
    userdata = {"ansible.name": name} if name else {}
    return {"id": set_id, "path": "/org/snapback/Snapback1/snapshot/%d" % set_id,
            "description": "d", "created": "2024-06-01T10:00:00Z", "created_usec": 1,
            "volumes": ["root"], "state": state, "used_bytes": 0, "size_bytes": 0,
            "merge_progress": 0.0, "userdata": userdata, "important": important, "boot_entry": ""}


class Fake(object):
    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self.path = os.path.join(self.dir, "snapbackctl")
        with open(self.path, "w") as f:
            f.write(FAKE % dict(python=sys.executable, dir=self.dir))
        os.chmod(self.path, stat.S_IRWXU)
        self.answers = {}

    def answer(self, command, rc=0, stdout="", stderr=""):
        self.answers[command] = [rc, stdout, stderr]
        with open(os.path.join(self.dir, "answers.json"), "w") as f:
            json.dump(self.answers, f)

    def calls(self):
        name = os.path.join(self.dir, "calls.jsonl")
        if not os.path.exists(name):
            return []
        with open(name) as f:
            return [json.loads(line) for line in f]


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


@pytest.fixture
def run_module(monkeypatch, fake):
    def exit_json(self, **kwargs):
        raise Exit(kwargs)

    def fail_json(self, **kwargs):
        raise Failed(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(main, check_mode=False, **args):
        args.setdefault("snapbackctl", fake.path)
        args["_ansible_check_mode"] = check_mode
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        try:
            main()
        except Exit as e:
            return "ok", e.args[0]
        except Failed as e:
            return "failed", e.args[0]
        raise AssertionError("the module neither exited nor failed")

    return run
