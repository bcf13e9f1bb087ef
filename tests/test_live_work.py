"""The UI's overlap announcements (stem/live_work.py): what the user is told, and how often."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from core.overlap import Overlap, OverlapLevel, OverlapReport
from stem.live_work import LiveWork


def announcer() -> tuple[LiveWork, list[tuple[str, str]]]:
    told: list[tuple[str, str]] = []
    app = SimpleNamespace(notify=lambda message, title, severity, timeout: told.append((severity, message)))
    return LiveWork(cast(Any, app)), told


def report(*pairs: tuple[str, str, str, OverlapLevel]) -> OverlapReport:
    return OverlapReport(tuple(Overlap(path, (a, b), level) for a, b, path, level in pairs))


def test_overlaps_found_at_start_are_one_notification_then_each_new_one_is_its_own():
    live, told = announcer()
    found = report(
        ("alder", "beech", "a.txt", OverlapLevel.FILE),
        ("alder", "cedar", "b.txt", OverlapLevel.HUNK),
        ("beech", "cedar", "c.txt", OverlapLevel.FILE),
    )
    live._announce(found)
    assert told == [
        (
            "error",
            "3 pairs of colonies change the same files (alder and beech, alder and cedar, beech and cedar): "
            "⚠ and ‼ in the list say which",
        )
    ]
    live._announce(found)  # nothing new: nothing said
    assert len(told) == 1
    later = report(
        ("alder", "beech", "a.txt", OverlapLevel.FILE),
        ("alder", "cedar", "b.txt", OverlapLevel.HUNK),
        ("beech", "cedar", "c.txt", OverlapLevel.HUNK),  # now the same lines
    )
    live._announce(later)
    assert told[1:] == [("error", "beech and cedar change the same lines of c.txt: merging both will conflict")]


def test_one_overlap_at_start_is_told_as_itself():
    live, told = announcer()
    live._announce(report(("alder", "beech", "a.txt", OverlapLevel.FILE)))
    assert told == [("warning", "alder and beech both change a.txt")]
