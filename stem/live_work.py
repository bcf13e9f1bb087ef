"""The live view of every colony's work, and the keys that bring it back (`m` merge, `c` commit, `u` sync).

What it keeps: each colony's merge status against its target (ahead/behind, merges clean or conflicts), the files
and lines two colonies both change, and what each running colony's cgroup uses. The git work runs in threads
through the hive's typed API; a recompute is asked for by the events that can change the answer (file changes,
colonies coming and going, a branch tip moving, seen by a look at the repositories' refs every POLL seconds) and
debounced, so a burst of edits costs one recompute and the event loop never waits on git.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.content import Content
from textual.timer import Timer

from core import lifecycle as lc
from core.cgroups import ColonyLimits, Usage, size_text
from core.errors import StemError
from core.events import ChangesUpdated, ColonyRemoved, Event, HiveChanged, StateChanged
from core.merge import MergeConflict, MergeState, MergeStatus
from core.offload import read_off_loop
from core.overlap import Overlap, OverlapLevel, OverlapReport
from core.words import plural
from stem.widgets.dialogs import ConfirmScreen
from stem.widgets.merge_dialog import CommitDialog, MergeChoice, MergeDialog
from stem.widgets.work_badges import WorkBadge, cpu_text, merge_parts

if TYPE_CHECKING:
    from stem.app import StemApp

__all__ = ["InfoExtras", "LiveWork"]

DEBOUNCE = 0.1  # seconds a burst of changes is gathered before one recompute
POLL = 1.5  # usage figures and the repositories' branch tips, this often
_LEVEL_RANK = {OverlapLevel.NONE: 0, OverlapLevel.FILE: 1, OverlapLevel.HUNK: 2}


@dataclass(slots=True)
class InfoExtras:
    """What the Info tab shows beside the record: the work and resources sections, and the preview URLs."""

    sections: list[Content] = field(default_factory=list)
    preview: dict[str, str] = field(default_factory=dict)  # service -> URL through the hive's preview port
    preview_note: str = ""


class LiveWork:
    """Merge statuses, overlaps and usage for the app's list, panels and Info; `figures` off (snapshots) leaves out
    what varies run to run (usage, preview routes)."""

    def __init__(self, app: StemApp, *, figures: bool = True) -> None:
        self.app = app
        self.figures = figures
        self.merge: dict[str, MergeStatus] = {}
        self.report = OverlapReport()
        self.usage: dict[str, tuple[int | None, int | None]] = {}  # colony -> (MiB, CPU %)
        self.diff_vs_target = False  # the Diff tab against the colony's target instead of its spawn's base
        self.recomputes = 0  # finished recomputes (benchmarks and tests watch it)
        self._cpu: dict[str, tuple[float, float]] = {}  # colony -> (when, CPU seconds) at the last look
        self._tips: dict[str, str] | None = None
        self._told: dict[tuple[str, str], OverlapLevel] = {}  # pairs already announced, at that level
        self._looked_once = False
        self._timer: Timer | None = None
        self._running = False
        self._again = False
        self._failed = ""

    # ---------------------------------------------------------------------------------------- recompute

    def start(self) -> None:
        self.changed()
        self.app.set_interval(POLL, self._poll)

    def on_event(self, event: Event) -> None:
        """Core events that can change a merge status or an overlap ask for a recompute."""
        moved = isinstance(event, StateChanged) and event.state in (lc.RUNNING, lc.STOPPED)
        if moved or isinstance(event, (ChangesUpdated, HiveChanged, ColonyRemoved)):
            self.changed()
        if isinstance(event, ChangesUpdated):
            self._quick_overlaps(event)
        if isinstance(event, ColonyRemoved):
            self.merge.pop(event.colony, None)
            self.usage.pop(event.colony, None)
            self._cpu.pop(event.colony, None)

    def changed(self) -> None:
        """Recompute soon (debounced); while one runs, once more after it."""
        if self._timer is None:
            self._timer = self.app.set_timer(DEBOUNCE, self._fire, name="live-work")

    def _fire(self) -> None:
        self._timer = None
        if self._running:
            self._again = True
            return
        self._running = True
        # The method, not a coroutine made now: a worker that never starts (the app quitting) leaves none unawaited.
        # (mypy infers Textual's WorkType union as Never for an async method: the ignore is for that alone.)
        self.app.run_worker(self._recompute, name="merge status", group="live-work", exit_on_error=False)  # type: ignore[arg-type]

    async def _recompute(self) -> None:
        hive = self.app.hive
        try:
            statuses, report = await asyncio.gather(hive.merge_statuses(), hive.overlaps())
        except Exception as exc:  # a repository gone meanwhile: keep the last answer, say so once
            text = str(exc) if isinstance(exc, StemError) else repr(exc)
            if text != self._failed:
                self._failed = text
                self.app.notify(f"could not compute the merge status: {text}", severity="warning")
            return
        finally:
            self._running = False
            if self._again:
                self._again = False
                self.changed()
        self._failed = ""
        self.recomputes += 1
        self._apply(statuses, report)

    def _apply(self, statuses: list[MergeStatus], report: OverlapReport) -> None:
        self.merge = {s.colony: s for s in statuses}
        self.report = report
        self._announce(report)
        self.app._redraw_rows()
        selected = self.app.selected
        if selected is not None:
            self.app._show_changes()
            if self.app.query_one("#main").tab == "info":  # type: ignore[attr-defined]
                self.app._show_info()

    def _quick_overlaps(self, event: ChangesUpdated) -> None:
        """At once, from the changed files the hosts' watchers report: the files this colony now shares with
        another colony of its repository, flagged at file level until the recompute (git, in a thread) says
        whether the lines meet too. The event loop does only set intersections here."""
        mine = {f.path for f in event.files}
        repos = {r.name: r.repo for r in self.app.records}
        repo = repos.get(event.colony)
        if not mine or repo is None:
            return
        known = {(o.path, frozenset(o.colonies)) for o in self.report.overlaps}
        found: list[Overlap] = []
        for other, files in self.app.changes.items():
            if other == event.colony or repos.get(other) != repo:
                continue
            for path in sorted(mine & {f.path for f in files}):
                if (path, frozenset((event.colony, other))) not in known:
                    found.append(Overlap(path, (event.colony, other), OverlapLevel.FILE))
        if found:
            self.report = OverlapReport((*self.report.overlaps, *found), self.report.errors)
            if self.recomputes or self._failed:
                # Not before the first full look: the hosts' first lists come one colony at a time as the UI links
                # to them, and what they show together is the first look's one notification, not one per pair.
                self._announce(self.report)
            self.app._redraw_rows()
            if self.app.selected in (event.colony, *(o.colonies[1] for o in found)):
                self.app._show_changes()

    def _announce(self, report: OverlapReport) -> None:
        """A notification the first time two colonies change the same file, and again if it becomes the same
        lines. What the first look finds (the UI just started, on colonies that overlapped already) is one
        notification, not one per pair stacked over the screen."""
        first, self._looked_once = not self._looked_once, True
        pairs: dict[tuple[str, str], tuple[OverlapLevel, list[str]]] = {}
        lines_met = {
            tuple(sorted(o.colonies)) for o in report.overlaps if o.level == OverlapLevel.HUNK and not o.binary
        }
        for overlap in report.overlaps:
            a, b = sorted(overlap.colonies)
            level, paths = pairs.get((a, b), (OverlapLevel.NONE, []))
            if _LEVEL_RANK[overlap.level] > _LEVEL_RANK[level]:
                level = overlap.level
            pairs[(a, b)] = (level, [*paths, overlap.path])
        new = {
            pair: (level, paths)
            for pair, (level, paths) in pairs.items()
            if _LEVEL_RANK[level] > _LEVEL_RANK[self._told.get(pair, OverlapLevel.NONE)]
        }
        for pair, (level, _paths) in new.items():
            self._told[pair] = level
        if first and len(new) > 1:
            worst = max((level for level, _paths in new.values()), key=_LEVEL_RANK.__getitem__)
            named = ", ".join(f"{a} and {b}" for a, b in list(new)[:3]) + (" and more" if len(new) > 3 else "")
            self.app.notify(
                f"{len(new)} pairs of colonies change the same files ({named}): ⚠ and ‼ in the list say which",
                title="overlap",
                severity="error" if worst == OverlapLevel.HUNK else "warning",
                timeout=8,
            )
            return
        for (a, b), (level, paths) in new.items():
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            if level == OverlapLevel.HUNK:
                what = f"change the same lines of {shown}" if (a, b) in lines_met else f"both change {shown} (binary)"
                self.app.notify(
                    f"{a} and {b} {what}: merging both will conflict",
                    title="overlap",
                    severity="error",
                    timeout=10,
                )
            else:
                self.app.notify(f"{a} and {b} both change {shown}", title="overlap", severity="warning", timeout=8)

    # ------------------------------------------------------------------------------------ usage, refs

    def _poll(self) -> None:
        running = [r.name for r in self.app.records if r.state == lc.RUNNING] if self.figures else []

        async def look() -> None:
            # A daemon thread, not a thread worker: quitting never waits for 100 colonies' usage to be read.
            tips, usages, now = await read_off_loop(lambda: self._look(running), "usage")
            self._looked(tips, usages, now)

        self.app.run_worker(look(), name="usage", group="live-poll", exclusive=True, exit_on_error=False)

    def _look(self, running: list[str]) -> tuple[dict[str, str], dict[str, Usage | None], float]:
        """In a thread: the repositories' branch tips, and each running colony's usage."""
        hive = self.app.hive
        tips = hive.branch_tips()
        usages: dict[str, Usage | None] = {}
        for name in running:
            try:
                usages[name] = hive.usage(name)
            except (StemError, OSError):
                usages[name] = None
        return tips, usages, time.monotonic()

    def _looked(self, tips: dict[str, str], usages: dict[str, Usage | None], now: float) -> None:
        if tips != self._tips:  # the first look too: a branch may have moved since the first recompute began
            self.changed()
        self._tips = tips
        before = dict(self.usage)
        for name in [n for n in self.usage if n not in usages]:
            self.usage.pop(name)
            self._cpu.pop(name, None)
        for name, usage in usages.items():
            if usage is None:
                self.usage.pop(name, None)
                continue
            mib = round(usage.memory / (1 << 20)) if usage.memory is not None else None
            pct: int | None = None
            last = self._cpu.get(name)
            if usage.cpu is not None:
                if last is not None and now > last[0]:
                    pct = max(0, round(100 * (usage.cpu - last[1]) / (now - last[0])))
                self._cpu[name] = (now, usage.cpu)
            self.usage[name] = (mib, pct)
        if self.usage != before:
            self.app._redraw_rows()
        selected = self.app.selected
        if selected in usages and self.app.query_one("#main").tab == "info":  # type: ignore[attr-defined]
            self.app._show_info()  # usage and preview routes are live only where they are seen

    # ------------------------------------------------------------------------------------------ views

    def badge(self, name: str) -> WorkBadge:
        status = self.merge.get(name)
        level = self.report.level(name)
        others = (
            sorted({c for o in self.report.of(name) if o.level == level for c in o.colonies if c != name})
            if level != OverlapLevel.NONE
            else []
        )
        mib, pct = self.usage.get(name, (None, None))
        return WorkBadge(
            merge=status.state if status is not None else None,
            ahead=status.ahead if status is not None else 0,
            behind=status.behind if status is not None else 0,
            conflicts=len(status.conflicts) if status is not None else 0,
            overlap=level,
            overlap_with=tuple(others),
            memory=mib,
            cpu=pct,
        )

    def file_overlaps(self, name: str) -> dict[str, tuple[OverlapLevel, tuple[str, ...]]]:
        """path -> (how strongly, with which colonies) for the colony's files another colony changes too."""
        found: dict[str, tuple[OverlapLevel, tuple[str, ...]]] = {}
        for overlap in self.report.of(name):
            other = next(c for c in overlap.colonies if c != name)
            level, others = found.get(overlap.path, (OverlapLevel.NONE, ()))
            if _LEVEL_RANK[overlap.level] > _LEVEL_RANK[level]:
                level = overlap.level
            found[overlap.path] = (level, tuple(sorted({*others, other})))
        return found

    async def info_extras(self, name: str) -> InfoExtras:
        """The Info tab's work and resources sections and preview URLs; the reads run in a thread."""
        hive = self.app.hive

        def read() -> tuple[ColonyLimits | None, dict[str, str], str, str]:
            peers = hive.peers(name).line()
            if not self.figures:
                return None, {}, "", peers
            limits = hive.limits(name)
            preview = hive.preview_urls(name).get(name, {})
            return limits, preview, hive.preview_problem() or "", peers

        limits, preview, problem, peers = await read_off_loop(read, "info")
        sections = self._work_section(name)
        if peers:  # read-only peering (`stem peer`): whom this colony reads at .shared/, and who reads it
            sections.append(Content.assemble(Content.styled(f"{'peers':>11}  ", "$text-muted"), peers))
        if self.figures:
            sections += self._resources_section(name, limits)
        note = f"the preview proxy is not running: {problem}" if problem else ""
        return InfoExtras(sections, preview, note)

    def _work_section(self, name: str) -> list[Content]:
        parts = [Content(""), Content.styled("Work", "bold")]
        status = self.merge.get(name)
        if status is None:
            parts.append(Content.styled("  computing…", "$text-muted"))
        else:
            badge = self.badge(name)
            marks = merge_parts(badge)
            verdict_style = (
                "$error"
                if status.state == MergeState.CONFLICTS
                else ("$success" if status.state in (MergeState.CLEAN, MergeState.FAST_FORWARD) else "$text-muted")
            )
            line = Content.assemble(
                Content.styled(f"{'target':>11}  ", "$text-muted"),
                Content.styled(status.target or "?", "bold"),
                f"  ↑{status.ahead} ahead ↓{status.behind} behind  ",
                Content.styled(status.summary, verdict_style),
                "  ",
                *marks,
            )
            parts.append(line)
            if status.conflicts:
                listed = ", ".join(status.conflicts[:6]) + (" …" if len(status.conflicts) > 6 else "")
                parts.append(
                    Content.assemble(Content.styled(f"{'conflicts':>11}  ", "$text-muted"), (listed, "$error"))
                )
            if status.note or status.error:
                parts.append(Content.styled(f"{'':>11}  {status.note or status.error}", "$text-muted"))
        binary = {o.path for o in self.report.of(name) if o.binary}
        for path, (level, others) in sorted(self.file_overlaps(name).items()):
            what = "same lines as" if level == OverlapLevel.HUNK else "also changed by"
            if level == OverlapLevel.HUNK and path in binary:
                what = "binary, also changed by"
            style = "bold $error" if level == OverlapLevel.HUNK else "$warning"
            parts.append(
                Content.assemble(
                    Content.styled(f"{'overlap':>11}  ", "$text-muted"),
                    path,
                    "  ",
                    Content.styled(f"{what} {', '.join(others)}", style),
                )
            )
        return parts

    def _resources_section(self, name: str, limits: ColonyLimits | None) -> list[Content]:
        parts = [Content(""), Content.styled("Resources", "bold")]
        usage = limits.usage if limits is not None else None
        in_force = limits.in_force if limits is not None else None
        if usage is None:
            parts.append(Content.styled("  no cgroup (not running)", "$text-muted"))
        else:
            memory = size_text(usage.memory) if usage.memory is not None else "?"
            if in_force is not None and in_force.memory is not None:
                memory += f" of {size_text(in_force.memory)}"
            _mib, pct = self.usage.get(name, (None, None))
            cpu = f"{usage.cpu:.1f} s in all" if usage.cpu is not None else "?"
            if pct is not None:
                cpu = f"{cpu_text(pct)} now, {cpu}"
            if in_force is not None and in_force.cpus is not None:
                cpu += f" (limit {in_force.cpus:g} CPUs)"
            parts.append(Content.assemble(Content.styled(f"{'memory':>11}  ", "$text-muted"), memory))
            parts.append(Content.assemble(Content.styled(f"{'cpu':>11}  ", "$text-muted"), cpu))
            if in_force is not None and in_force.pids is not None:
                parts.append(
                    Content.assemble(Content.styled(f"{'pids':>11}  ", "$text-muted"), f"limit {in_force.pids}")
                )
        for _at, _kind, message in (limits.events if limits is not None else ())[-5:]:
            parts.append(Content.assemble(Content.styled(f"{'held':>11}  ", "$text-muted"), (message, "$error")))
        return parts

    # -------------------------------------------------------------------------------------------- keys

    def merge_selected(self) -> None:
        rec = self.app.selected_record()
        if rec is None:
            self.app.notify("no colony selected", severity="warning")
            return
        name = rec.name

        async def open_dialog() -> None:
            hive = self.app.hive
            diff, statuses, checkout = await asyncio.gather(
                hive.target_diff(name, text=False), hive.merge_statuses([name]), hive.checkout_problem(name)
            )
            status = next((s for s in statuses if s.colony == name), None)
            if status is not None:
                self.merge[name] = status
                self.app._redraw_rows()

            def chosen(choice: MergeChoice | None) -> None:
                if choice is not None:
                    self._merge(name, choice)

            self.app.push_screen(MergeDialog(name, diff, status, checkout), chosen)

        # `m` then `y`: the `y` is the dialog's
        self.app._colony_work(name, self.app.holding_keys(open_dialog()), f"merge status of {name}")

    def _merge(self, name: str, choice: MergeChoice) -> None:
        async def merge() -> None:
            try:
                result = await self.app.hive.merge(name, squash=choice.squash)
            except MergeConflict as exc:
                files = ", ".join(c.path for c in exc.conflicts[:5])
                self.app.notify(f"{exc}: {files}" if files else str(exc), severity="error", timeout=10)
                return
            finally:
                self.changed()
            self.app.notify(
                f"merged {name} into {result.target} ({result.how}, {plural(result.commits, 'commit')}, "
                f"{plural(len(result.files), 'file')})"
                + (f"; {plural(len(result.uncommitted), 'uncommitted file')} stayed out" if result.uncommitted else ""),
                timeout=8,
            )
            self.app.refresh_colonies()
            rec = next((r for r in self.app.records if r.name == name), None)
            if rec is not None:
                self.app._prepare_destroy(rec, f"{name} is merged into {result.target}: its work is there now.")

        self.app._colony_work(name, merge(), f"merge {name}")

    def commit_selected(self) -> None:
        rec = self.app.selected_record()
        if rec is None:
            self.app.notify("no colony selected", severity="warning")
            return
        name, branch = rec.name, rec.branch

        async def open_dialog() -> None:
            diff = await self.app.hive.target_diff(name, text=False)
            files = sorted(diff.uncommitted)
            if not files:
                self.app.notify(f"nothing to commit in {name}: its work is committed", severity="warning")
                return

            def chosen(message: str | None) -> None:
                if message:
                    self._commit(name, message)

            self.app.push_screen(CommitDialog(name, branch, files), chosen)

        # the message typed right after `c` is the dialog's
        self.app._colony_work(name, self.app.holding_keys(open_dialog()), f"changes of {name}")

    def _commit(self, name: str, message: str) -> None:
        async def commit() -> None:
            try:
                result = await self.app.hive.commit(name, message)
            finally:
                self.changed()
            self.app.notify(
                f"committed {plural(len(result.files), 'file')} of {name} as {result.commit[:10]} on {result.branch}"
            )

        self.app._colony_work(name, commit(), f"commit {name}")

    def sync_selected(self) -> None:
        rec = self.app.selected_record()
        if rec is None:
            self.app.notify("no colony selected", severity="warning")
            return
        name = rec.name

        async def ask() -> None:
            """What the sync would bring and the conflicts it would leave, then a yes or no: a sync rewrites the
            worktree the agent is working in."""
            statuses = await self.app.hive.merge_statuses([name])
            status = next((s for s in statuses if s.colony == name), None)
            if status is not None and status.state != MergeState.UNKNOWN:
                self.merge[name] = status
                self.app._redraw_rows()
                if status.behind == 0:
                    self.app.notify(f"{name} is up to date with {status.target}")
                    return
            target = status.target if status is not None else rec.target
            title, body, danger = sync_question(rec.name, rec.branch, target, status)

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.app._colony_work(name, sync(), f"sync {name}")

            self.app.push_screen(ConfirmScreen(title, body, "Sync", danger=danger, id="confirm-sync"), confirmed)

        async def sync() -> None:
            try:
                result = await self.app.hive.sync(name)
            finally:
                self.changed()
            if result.conflicts:
                files = ", ".join(c.path for c in result.conflicts[:5])
                self.app.notify(
                    f"synced {result.target} into {name} with conflicts in {files}: left in its worktree for the agent",
                    severity="warning",
                    timeout=10,
                )
            elif result.commits == 0:
                self.app.notify(f"{name} is up to date with {result.target}")
            else:
                self.app.notify(
                    f"synced {plural(result.commits, 'commit')} of {result.target} into {name} ({result.how})"
                )

        # `u` then `y`: the `y` is the dialog's
        self.app._colony_work(name, self.app.holding_keys(ask()), f"merge status of {name}")

    def toggle_diff_target(self) -> None:
        self.diff_vs_target = not self.diff_vs_target
        self.app.notify(
            "the Diff tab shows the work against " + ("its target" if self.diff_vs_target else "its spawn's base")
        )
        self.app._load_diff()


def sync_question(name: str, branch: str, target: str, status: MergeStatus | None) -> tuple[str, Content, bool]:
    """The sync confirmation's title and body, and whether it is a warning (conflicts foreseen)."""
    known = status is not None and status.state != MergeState.UNKNOWN
    what = plural(status.behind, "new commit") if status is not None and known else "the new commits"
    lines = [
        Content.assemble(
            f"This merges {what} of ",
            Content.styled(target, "bold"),
            " into ",
            Content.styled(branch, "bold"),
            f", in {name}'s worktree, where its agent is working.",
        ),
        Content(""),
    ]
    conflicts = status.conflicts if status is not None else ()
    if conflicts:
        listed = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        lines.append(
            Content.styled(
                f"Conflicts foreseen in {plural(len(conflicts), 'file')} ({listed}): left in the worktree with "
                "markers, for the agent to resolve and commit.",
                "bold $warning",
            )
        )
    elif known:
        lines.append(Content("No conflict with its committed work."))
    else:
        why = status.error if status is not None and status.error else "Its merge status is not known."
        lines.append(Content.styled(why, "$warning"))
    lines.append(
        Content.styled("Uncommitted files the merge would change make git refuse, changing nothing.", "$text-muted")
    )
    return f"Sync {name} with {target}?", Content("\n").join(lines), bool(conflicts)


def file_section(text: str, path: str) -> str:
    """The part of a unified diff about `path`."""
    out: list[str] = []
    keep = False
    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git "):
            keep = line.rstrip("\n").endswith(f" b/{path}")
        if keep:
            out.append(line)
    return "".join(out)
