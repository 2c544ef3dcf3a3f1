"""Governance rules without a server: what the ledger folds from the log, who the policy
lets do what, and a removal that cannot be recorded putting the file back."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypid.events import ANONYMOUS, EventLog, NoSpaceError
from pypid.index.ledger import Ledger
from pypid.manage import Actor, ConflictError, ForbiddenError, Manager, Policy
from pypid.manage.catalog import RootCatalog
from pypid.storage import PackageRoot
from tests.builders import make_wheel


def ledger_after(tmp_path: Path, *lines: tuple[str, dict[str, object]]) -> Ledger:
    events = EventLog(tmp_path / ".pypid")
    for action, fields in lines:
        user = str(fields.pop("user", "cli:root"))
        events.append(action, user=user, **fields)
    ledger = Ledger(events)
    ledger.catch_up()
    return ledger


def test_the_first_upload_with_a_login_claims_a_project(tmp_path: Path) -> None:
    ledger = ledger_after(
        tmp_path,
        ("upload", {"user": ANONYMOUS, "project": "a", "file": "a-1.tar.gz"}),
        ("upload", {"user": "cli:root", "project": "a", "file": "a-2.tar.gz"}),
        ("upload", {"user": "alice", "project": "a", "file": "a-3.tar.gz"}),
        ("upload", {"user": "bob", "project": "a", "file": "a-4.tar.gz"}),
        ("owner-add", {"project": "b", "owner": "carol"}),
        ("owner-remove", {"project": "b", "owner": "carol"}),
    )
    assert ledger.owners("a") == {"alice"}
    assert ledger.uploader("a-1.tar.gz") is None and ledger.uploader("a-4.tar.gz") == "bob"
    assert ledger.owners("b") == frozenset()  # claimed: nobody's first upload takes it now
    assert ledger.owners("c") is None
    assert ledger.claimed() == {"a", "b"}


def test_a_removed_name_is_remembered_until_the_same_file_returns(tmp_path: Path) -> None:
    ledger = ledger_after(
        tmp_path,
        ("remove", {"project": "a", "file": "a-1.tar.gz", "sha256": "ab" * 32}),
        ("yank", {"project": "a", "file": "a-2.tar.gz", "reason": "bad"}),
    )
    assert dict(ledger.removed("a")) == {"a-1.tar.gz": "ab" * 32}
    assert ledger.marks.yanks == {"a-2.tar.gz": "bad"}
    ledger.events.append("upload", user="alice", project="a", file="a-1.tar.gz")
    ledger.catch_up()
    assert dict(ledger.removed("a")) == {}


POLICY = Policy(frozenset({"root"}), project_owners=True)


@pytest.mark.parametrize(("actor", "doing", "owners", "says"), [
    (Actor("bob"), "upload to", {"alice"}, "bob may not upload to p: only its owners (alice)"),
    (Actor("bob"), "yank files of", None, "it has no owner yet, so only admins may"),
    (Actor("bob"), "yank files of", set(), "only its owners (none left) and admins may"),
    (Actor(ANONYMOUS), "yank files of", {"alice"}, "yank files of p needs a login"),
])
def test_the_policy_names_what_is_missing(actor: Actor, doing: str, owners: set[str] | None,
                                          says: str) -> None:
    with pytest.raises(ForbiddenError, match=says.replace("(", r"\(").replace(")", r"\)")):
        POLICY.check(actor, doing, "p", owners)


@pytest.mark.parametrize(("actor", "doing", "owners"), [
    (Actor("alice"), "upload to", {"alice"}),
    (Actor("bob"), "upload to", None),  # an unclaimed project: the upload claims it
    (Actor("root", admin=True), "remove files of", set()),
    (Actor("cli:root", admin=True), "set the status of", None),
])
def test_the_policy_lets_owners_admins_and_first_uploaders_through(
        actor: Actor, doing: str, owners: set[str] | None) -> None:
    POLICY.check(actor, doing, "p", owners)


def test_without_project_owners_any_login_may(tmp_path: Path) -> None:
    Policy(frozenset(), project_owners=False).check(Actor("bob"), "yank files of", "p",
                                                    {"alice"})
    with pytest.raises(ForbiddenError):
        Policy(frozenset(), project_owners=False).check_admin(Actor("bob"), "managing owners")


def manager(root: Path) -> Manager:
    storage = PackageRoot(root)
    events = EventLog(storage.cache_dir)
    return Manager(storage, events, Ledger(events), RootCatalog(storage), policy=POLICY,
                   users=lambda: ["alice", "bob"])


def test_a_removal_the_log_cannot_record_puts_the_file_back(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    wheel = make_wheel(tmp_path / "root", "demo", "1.0")
    data = wheel.read_bytes()
    mgr = manager(tmp_path / "root")

    def full(*_args: object, **_kwargs: object) -> None:
        raise NoSpaceError("no space left for the audit log")

    monkeypatch.setattr(mgr.events, "append", full)
    with pytest.raises(NoSpaceError):
        mgr.remove(Actor("cli:root", admin=True), mgr.find("demo==1.0"))
    assert wheel.read_bytes() == data
    assert not [p for p in wheel.parent.iterdir() if p.name.startswith(".pypid-removing-")]


def test_an_upload_gate_refuses_archived_projects_and_other_bytes_under_removed_names(
        tmp_path: Path) -> None:
    mgr = manager(tmp_path / "root")
    (tmp_path / "root").mkdir()
    admin = Actor("cli:root", admin=True)
    mgr.events.append("remove", user="cli:root", project="demo", file="demo-1.0.tar.gz",
                      sha256="aa" * 32)
    gate = mgr.upload_gate(Actor("alice", "127.0.0.1"))
    with pytest.raises(ConflictError, match="File already exists: demo-1.0.tar.gz"):
        gate.admit("demo-1.0.zip", "bb" * 32)  # another spelling of the same sdist
    gate.admit("demo-1.0.tar.gz", "aa" * 32)  # the same bytes: restored
    mgr.events.append("status", user=admin.user, project="demo", status="archived",
                      reason="moved")
    with pytest.raises(ForbiddenError, match="demo is archived: moved; it takes no uploads"):
        gate.admit("demo-2.0.tar.gz", "cc" * 32)


def test_recorded_names_go_once_the_index_shows_them_and_uploaders_stay(
        tmp_path: Path) -> None:
    ledger = ledger_after(
        tmp_path,
        ("upload", {"user": "alice", "project": "a", "file": "a-1.tar.gz"}),
        ("upload", {"user": "alice", "project": "a", "file": "a-2.tar.gz"}),
        ("upload", {"user": "bob", "project": "b", "file": "b-1.tar.gz"}),
    )
    assert ledger.recorded("a") == {"a-1.tar.gz", "a-2.tar.gz"}
    ledger.forget_indexed({"a-1.tar.gz", "b-1.tar.gz"}.__contains__)
    assert ledger.recorded("a") == {"a-2.tar.gz"} and ledger.recorded("b") == frozenset()
    assert ledger._recorded.keys() == {"a"}
    assert ledger.uploader("a-1.tar.gz") == "alice" and ledger.uploader("b-1.tar.gz") == "bob"
    ledger.events.append("remove", user="cli:root", project="a", file="a-2.tar.gz",
                         sha256="ab" * 32)
    ledger.events.append("upload", user="carol", project="b", file="b-2.tar.gz")
    ledger.catch_up()
    assert ledger.recorded("a") == frozenset() and ledger.recorded("b") == {"b-2.tar.gz"}
