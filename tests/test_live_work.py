"""The UI's overlap announcements (stem/live_work.py): what the user is told, and how often."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from core.events import ChangesUpdated, FileChange
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


def test_the_hosts_first_lists_at_start_are_one_notification_with_the_first_look():
    """A UI starting on colonies that overlap already hears from their hosts one at a time: the quick check flags
    the rows at once, and the first full look tells them in one notification, not one per pair stacked up."""
    told: list[tuple[str, str]] = []
    changes: dict[str, tuple[FileChange, ...]] = {}
    app = SimpleNamespace(
        notify=lambda message, title, severity, timeout: told.append((severity, message)),
        records=[SimpleNamespace(name=name, repo="/repo") for name in ("alder", "beech", "cedar")],
        changes=changes,
        selected=None,
        _redraw_rows=lambda: None,
        _show_changes=lambda: None,
    )
    live = LiveWork(cast(Any, app))
    for name in ("alder", "beech", "cedar"):
        files = (FileChange("app.txt", "M", 1, 1),)
        changes[name] = files
        live._quick_overlaps(ChangesUpdated(name, files))
    assert told == []
    assert len(live.report.overlaps) == 3  # the rows show them already
    live.recomputes += 1  # the first full look (`_recompute`), as `_apply` tells it
    live._announce(live.report)
    assert told == [
        (
            "warning",
            "3 pairs of colonies change the same files (alder and beech, alder and cedar, beech and cedar): "
            "⚠ and ‼ in the list say which",
        )
    ]
    files = (FileChange("app.txt", "M", 1, 1),)
    changes["dogwood"] = files
    app.records.append(SimpleNamespace(name="dogwood", repo="/repo"))
    live._quick_overlaps(ChangesUpdated("dogwood", files))  # after it: each new pair is told at once
    assert len(told) == 4 and all("dogwood" in message for _, message in told[1:])
