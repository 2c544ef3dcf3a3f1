"""What the mirror lets through: the cooldown on young upstream files, and which local
projects are merged with their upstream namesakes (the rest hide them: dependency confusion).
Pure."""

from __future__ import annotations

import calendar
import fnmatch
import re
import time

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from pypid.distfile import normalize
from pypid.metrics import tally

DAY = 86400


def parse_upload_time(text: str | None) -> float | None:
    """PEP 700's ``upload-time`` as seconds since the epoch; None when absent or unreadable.

    >>> parse_upload_time("2026-01-02T03:04:05.5Z"), parse_upload_time("soon")
    (1767323045.5, None)
    """
    if not text or not text.endswith("Z"):
        return None
    whole, _, fraction = text[:-1].partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction else 0.0)
    except ValueError:
        return None


class Cooldown:
    """``min_age_days``: upstream files younger than that (or of unknown age) are held back,
    unless their release matches one of ``exempt`` (requirement specs)."""

    def __init__(self, min_age_days: int, exempt: tuple[str, ...] = ()) -> None:
        self.min_age = min_age_days * DAY
        self._exempt: dict[str, list[SpecifierSet]] = {}
        for spec in exempt:
            requirement = Requirement(spec)  # checked by the config already
            self._exempt.setdefault(normalize(requirement.name), []).append(
                requirement.specifier)

    @property
    def active(self) -> bool:
        return self.min_age > 0

    def refusal(self, project: str, version: str, upload_time: str | None,
                now: float) -> str | None:
        """Why this upstream file is held back, or None if it may be served."""
        if not self.min_age:
            return None
        uploaded = parse_upload_time(upload_time)
        if uploaded is not None and now - uploaded >= self.min_age:
            return None
        if self._exempted(project, version):
            return None
        days = self.min_age // DAY
        tally.add("cooldown_hidden")
        if uploaded is None:
            return f"upstream gives no upload time (cooldown: upstream.min_age_days = {days})"
        age = max(0.0, (now - uploaded) / DAY)
        return (f"uploaded {age:.1f} days ago; this index holds back upstream files "
                f"younger than {days} days (upstream.min_age_days)")

    def _exempted(self, project: str, version: str) -> bool:
        specifiers = self._exempt.get(project)
        if not specifiers:
            return False
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        return any(spec.contains(parsed, prereleases=True) for spec in specifiers)


def merges(project: str, patterns: tuple[str, ...]) -> bool:
    """Does a local ``project`` show its upstream namesake's files too (``upstream.merge``)?

    >>> merges("corp-tools", ("corp-*",)), merges("requests", ("corp-*",))
    (True, False)
    """
    return any(fnmatch.fnmatchcase(project, _SEPARATORS.sub("-", p.lower())) for p in patterns)


_SEPARATORS = re.compile(r"[-_.]+")  # PEP 503's normalization, which leaves globs alone
