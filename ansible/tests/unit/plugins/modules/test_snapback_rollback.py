# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.snapback.snapback.plugins.modules import snapback_rollback
from .conftest import doc, snapshot


def test_rollback_now_waits(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(2, "before")]))
    fake.answer("rollback", stdout=doc(id=2, result="merged"))
    outcome, result = run_module(snapback_rollback.main, name="before")
    assert outcome == "ok", result
    assert result["changed"] is True
    assert result["result"] == "merged"
    assert result["scheduled"] is False
    assert fake.calls()[1][2:] == ["rollback", "2", "--wait"]


def test_scheduled_exit_status_is_success(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5)))
    fake.answer("rollback", rc=3, stdout=doc(id=5, result="scheduled"))
    outcome, result = run_module(snapback_rollback.main, id=5, wait=False)
    assert outcome == "ok", result
    assert result["changed"] is True and result["scheduled"] is True
    assert fake.calls()[1][2:] == ["rollback", "5"]


def test_already_scheduled_is_unchanged(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5, state="merge-scheduled")))
    outcome, result = run_module(snapback_rollback.main, id=5)
    assert outcome == "ok", result
    assert result["changed"] is False and result["scheduled"] is True
    assert [c[2] for c in fake.calls()] == ["show"]


def test_check_mode_rolls_nothing_back(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5)))
    outcome, result = run_module(snapback_rollback.main, check_mode=True, id=5)
    assert outcome == "ok", result
    assert result["changed"] is True
    assert [c[2] for c in fake.calls()] == ["show"]


def test_refusal_is_the_daemons_sentence(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5, state="invalid")))
    fake.answer("rollback", rc=1, stderr="snapbackctl: snapshot set 5 is invalid and cannot be rolled back\n")
    outcome, result = run_module(snapback_rollback.main, id=5)
    assert outcome == "failed"
    assert result["msg"] == "snapshot set 5 is invalid and cannot be rolled back"


def test_missing_id_is_the_daemons_not_found(fake, run_module):
    fake.answer("show", rc=1, stderr="snapbackctl: not found: no snapshot set 9\n")
    outcome, result = run_module(snapback_rollback.main, id=9)
    assert outcome == "failed"
    assert result["msg"] == "not found: no snapshot set 9"


def test_cancel_only_a_scheduled_rollback(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5, state="merge-scheduled")))
    fake.answer("cancel", stdout=doc(id=5, cancelled=True))
    outcome, result = run_module(snapback_rollback.main, id=5, state="cancelled")
    assert outcome == "ok", result
    assert result["changed"] is True and result["result"] == "cancelled"
    assert fake.calls()[1][2:] == ["cancel", "5"]


def test_cancel_with_nothing_scheduled_is_unchanged(fake, run_module):
    fake.answer("show", stdout=doc(snapshot=snapshot(5)))
    outcome, result = run_module(snapback_rollback.main, id=5, state="cancelled")
    assert outcome == "ok", result
    assert result["changed"] is False and result["result"] == "active"
    assert [c[2] for c in fake.calls()] == ["show"]
