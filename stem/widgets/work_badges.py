"""The compact marks a colony's row carries about its work (lazygit's `↑3 ↓1`): ahead/behind its target and whether
it merges clean (`✓`) or conflicts (`✗2`), another colony changing the same files (`⚠ beech`) or lines (`‼ beech`),
and the memory and CPU its cgroup uses now."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content

from core.merge import MergeState
from core.overlap import OverlapLevel

__all__ = ["WorkBadge", "cpu_text", "memory_text", "merge_parts", "overlap_part", "usage_part"]


@dataclass(frozen=True, slots=True)
class WorkBadge:
    """What a row shows of one colony's work; hashable, so the list's prompt cache keys on it."""

    merge: MergeState | None = None  # None: not computed yet
    ahead: int = 0
    behind: int = 0
    conflicts: int = 0
    overlap: OverlapLevel = OverlapLevel.NONE
    overlap_with: tuple[str, ...] = ()
    memory: int | None = None  # MiB, rounded (a row changes only when the figure shown does)
    cpu: int | None = None  # percent of one CPU over the last interval


def merge_parts(badge: WorkBadge) -> list[Content]:
    """`↑3 ↓1 ✓`, `↑1 ✗2`, `↓4` (nothing of its own to merge), `?` (no target), or nothing."""
    if badge.merge is None:
        return []
    if badge.merge == MergeState.UNKNOWN:
        return [Content.styled("?", "$text-muted")]
    arrows = " ".join(
        a for a in (f"↑{badge.ahead}" if badge.ahead else "", f"↓{badge.behind}" if badge.behind else "") if a
    )
    if badge.merge == MergeState.NOTHING:
        return [Content.styled(arrows, "$text-muted")] if arrows else []
    if badge.merge == MergeState.CONFLICTS:
        mark = Content.styled(f"✗{badge.conflicts}", "bold $error")
    else:
        mark = Content.styled("✓", "$success")
    return [Content.assemble(Content.styled(arrows + " ", "$text-muted") if arrows else "", mark)]


def overlap_part(badge: WorkBadge) -> Content | None:
    """`⚠ beech` (the same file as beech), `‼ beech` (the same lines: a conflict to come), `+N` for more."""
    if badge.overlap == OverlapLevel.NONE or not badge.overlap_with:
        return None
    others = badge.overlap_with[0] + (f"+{len(badge.overlap_with) - 1}" if len(badge.overlap_with) > 1 else "")
    if badge.overlap == OverlapLevel.HUNK:
        return Content.styled(f"‼ {others}", "bold $error")
    return Content.styled(f"⚠ {others}", "$warning")


def memory_text(mib: int) -> str:
    return f"{mib}M" if mib < 1024 else f"{mib / 1024:.1f}G"


def cpu_text(percent: int) -> str:
    return f"{percent}%"


def usage_part(badge: WorkBadge) -> Content | None:
    """`42M 3%`: memory and CPU from the colony's cgroup (running colonies only)."""
    if badge.memory is None and badge.cpu is None:
        return None
    shown = [
        memory_text(badge.memory) if badge.memory is not None else "",
        cpu_text(badge.cpu) if badge.cpu is not None else "",
    ]
    return Content.styled(" ".join(s for s in shown if s), "$text-muted")
