"""Who may change what: the actor of a change, and the refusals, each one line.

With ``project_owners`` on, an upload, yank, unyank, remove or status change of a
project needs one of its owners or an admin; a project nobody claimed yet (files
copied in by hand, or from an older pypid) is claimed by its first upload with a
login. Owners and the audit log are for admins. The command line acts as an admin:
whoever runs it can write the server's files anyway.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from pypid.events import ANONYMOUS


class ManageError(Exception):
    """What was asked cannot be done (one line). ``status``: the HTTP answer."""

    status = 400


class NotFoundError(ManageError):
    status = 404


class ForbiddenError(ManageError):
    status = 403


class ConflictError(ManageError):
    status = 409


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit log names them, and from where."""

    user: str  # a login, "cli:<unix user>" or ANONYMOUS
    client: str | None = None
    admin: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user == ANONYMOUS


@dataclass(frozen=True, slots=True)
class Policy:
    """``[auth] admins`` and ``project_owners``."""

    admins: frozenset[str]
    project_owners: bool

    def actor(self, user: str | None, client: str | None) -> Actor:
        """The actor of an HTTP request (``user`` None: no login)."""
        if not user:
            return Actor(ANONYMOUS, client)
        return Actor(user, client, admin=user in self.admins)

    def check(self, actor: Actor, doing: str, project: str,
              owners: Set[str] | None) -> None:
        """Raise ForbiddenError unless ``actor`` may do ``doing`` (a verb phrase such as
        "upload to", "yank files of") to ``project``, which ``owners`` own (None: nobody
        claimed it)."""
        if actor.admin:
            return
        if actor.anonymous:
            raise ForbiddenError(f"{doing} {project} needs a login")
        if not self.project_owners:
            return
        if owners is None:
            if doing == "upload to":
                return  # the upload claims it
            raise ForbiddenError(f"{actor.user} may not {doing} {project}: it has no owner "
                                 "yet, so only admins may")
        if actor.user in owners:
            return
        named = ", ".join(sorted(owners)) or "none left"
        raise ForbiddenError(f"{actor.user} may not {doing} {project}: only its owners "
                             f"({named}) and admins may")

    def check_admin(self, actor: Actor, doing: str) -> None:
        if not actor.admin:
            who = "a login" if actor.anonymous else f"an admin ({actor.user} is not one)"
            raise ForbiddenError(f"{doing} needs {who}")
