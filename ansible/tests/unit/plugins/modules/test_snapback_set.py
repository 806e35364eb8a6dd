# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.snapback.snapback.plugins.modules import snapback_set
from .conftest import doc, snapshot


def test_takes_a_set_with_the_name_in_userdata(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(1, "other")]))
    fake.answer("snapshot", stdout=doc(snapshot=snapshot(2, "before")))
    outcome, result = run_module(snapback_set.main, name="before", description="pre",
                                 volumes=["root", "var"], userdata={"ticket": "CHG-1"},
                                 important=True, cow_size="2G")
    assert outcome == "ok", result
    assert result["changed"] is True
    assert result["snapshot"]["id"] == 2
    assert fake.calls()[1] == [
        "--json", "--no-ask-password", "snapshot", "--description", "pre",
        "--userdata", "ansible.name=before", "--userdata", "ticket=CHG-1",
        "--important", "--cow-size", "2G", "--", "root", "var",
    ]


def test_existing_name_is_not_taken_again(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(4, "before"), snapshot(5, "other")]))
    outcome, result = run_module(snapback_set.main, name="before")
    assert outcome == "ok", result
    assert result["changed"] is False
    assert result["snapshot"]["id"] == 4
    assert [c[2] for c in fake.calls()] == ["list"]


def test_check_mode_takes_nothing(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[]))
    outcome, result = run_module(snapback_set.main, check_mode=True, name="before")
    assert outcome == "ok", result
    assert result["changed"] is True
    assert result["diff"]["after"]["userdata"] == {"ansible.name": "before"}
    assert [c[2] for c in fake.calls()] == ["list"]


def test_daemon_refusal_is_the_message(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[]))
    fake.answer("snapshot", rc=1, stderr="snapbackctl: no space: the pool has no room for 64 MiB\n")
    outcome, result = run_module(snapback_set.main, name="before")
    assert outcome == "failed"
    assert result["msg"] == "no space: the pool has no room for 64 MiB"
    assert result["rc"] == 1


def test_absent_deletes_every_set_of_the_name(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(3, "old"), snapshot(4, "keep"), snapshot(7, "old")]))
    fake.answer("delete", stdout=doc(deleted=[3, 7], failed=[]))
    outcome, result = run_module(snapback_set.main, name="old", state="absent")
    assert outcome == "ok", result
    assert result["changed"] is True
    assert result["deleted"] == [3, 7]
    assert fake.calls()[1][2:] == ["delete", "3", "7"]


def test_absent_without_a_set_changes_nothing(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(4, "keep")]))
    outcome, result = run_module(snapback_set.main, id=9, state="absent")
    assert outcome == "ok", result
    assert result["changed"] is False
    assert [c[2] for c in fake.calls()] == ["list"]


def test_absent_in_check_mode_deletes_nothing(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(3, "old")]))
    outcome, result = run_module(snapback_set.main, check_mode=True, name="old", state="absent")
    assert outcome == "ok", result
    assert result["changed"] is True and result["deleted"] == [3]
    assert [c[2] for c in fake.calls()] == ["list"]


def test_an_unknown_schema_is_refused(fake, run_module):
    fake.answer("list", stdout='{"schema": "snapbackctl/2", "snapshots": []}')
    outcome, result = run_module(snapback_set.main, name="before")
    assert outcome == "failed"
    assert "snapbackctl/2" in result["msg"] and "snapbackctl/1" in result["msg"]


def test_name_key_in_userdata_is_refused(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[]))
    outcome, result = run_module(snapback_set.main, name="a", userdata={"ansible.name": "b"})
    assert outcome == "failed"
    assert "ansible.name" in result["msg"]
    assert [c[2] for c in fake.calls()] == ["list"]


def test_absent_by_id_deletes_that_set_only(fake, run_module):
    fake.answer("list", stdout=doc(snapshots=[snapshot(3, "old"), snapshot(4, "old")]))
    fake.answer("delete", stdout=doc(deleted=[4], failed=[]))
    outcome, result = run_module(snapback_set.main, id=4, state="absent")
    assert outcome == "ok", result
    assert result["changed"] is True and result["deleted"] == [4]
    assert fake.calls()[1][2:] == ["delete", "4"]
