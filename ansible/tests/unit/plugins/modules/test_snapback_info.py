# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.snapback.snapback.plugins.modules import snapback_info
from .conftest import doc, snapshot


def test_reports_sets_pool_and_merges(fake, run_module):
    fake.answer("status", stdout=doc(
        version="0.1.0", backend="userspace",
        volumes=[{"name": "root", "device": "/dev/loop0", "backing": "/x", "state": "active",
                  "size_bytes": 1, "auto": True}],
        pool={"path": "/p", "size_bytes": 100, "used_bytes": 10},
        pending_merges=[3], running_merges=[]))
    fake.answer("list", stdout=doc(snapshots=[snapshot(3, "before", state="merge-scheduled"), snapshot(4)]))
    outcome, result = run_module(snapback_info.main, check_mode=True)
    assert outcome == "ok", result
    assert result["changed"] is False
    assert result["pool"] == {"path": "/p", "size_bytes": 100, "used_bytes": 10}
    assert result["pending_merges"] == [3]
    assert [(s["id"], s["name"], s["state"]) for s in result["sets"]] == [
        (3, "before", "merge-scheduled"), (4, None, "active")]


def test_no_daemon_is_the_clients_sentence(fake, run_module):
    fake.answer("status", rc=1, stderr="snapbackctl: snapbackd is not running and could not be started\n")
    outcome, result = run_module(snapback_info.main)
    assert outcome == "failed"
    assert result["msg"] == "snapbackd is not running and could not be started"
