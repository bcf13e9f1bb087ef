"""The Info tab: where the colony lives (IP, worktree, database, preview URLs), its state timeline, its errors."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from textual import events
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from core.egress import EgressInForce
from stem.hive_view import Clock, FailedSpawn
from stem.keys import bind

if TYPE_CHECKING:
    from core.host.client import ServiceView
    from core.registry import ColonyRecord, Transition

__all__ = ["InfoView"]


_LABEL = 13  # a fact's label column, with the two spaces after it


def _facts(name: str, rows: Iterable[tuple[str, str]], reason: str, width: int) -> list[Content]:
    """The name, then one labelled line a fact, then the reason (in the error colour) if there is one; a value
    longer than the `width` left of a line goes on under itself, not under its label (a worktree's path in an
    80-column terminal)."""
    parts = [Content.styled(name, "bold $primary"), Content("")]
    for label, value in rows:
        parts.append(Content.assemble(_label(label), _hang(value, width)))
    if reason:
        parts.append(Content.assemble(_label("reason"), (_hang(reason, width), "$error")))
    return parts


def _label(label: str) -> Content:
    """A fact's label, right-aligned in the label column (`_LABEL`, the two spaces after it included)."""
    return Content.styled(f"{label:>{_LABEL - 2}}  ", "$text-muted")


def _hang(value: str, width: int) -> str:
    """`value` cut into lines of the room right of the label column, each after the first indented to it."""
    room = width - _LABEL - 2  # (and the scrollbar's columns, if the facts come to need one)
    if room < 12 or len(value) <= room:
        return value
    lines: list[str] = []
    for line in textwrap.wrap(value, room, break_long_words=False, break_on_hyphens=False) or [value]:
        while len(line) > room:  # a path longer than the room: cut after a slash
            cut = line.rfind("/", 0, room) + 1 or room
            lines.append(line[:cut])
            line = line[cut:]
        lines.append(line)
    return ("\n" + " " * _LABEL).join(lines)


def _agent(choice: tuple[str, str, str]) -> str:
    """shell (colony.toml) · runs /bin/bash: the agent, where it was chosen, and what its host started."""
    spec, source, command = choice
    return f"{spec}  ({source})" + (f"  · runs {command}" if command and command != spec else "")


class InfoView(VerticalScroll, can_focus=True):
    BINDINGS = [bind("list.down", "scroll_down"), bind("list.up", "scroll_up")]

    def __init__(self, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.body = Static(id="info-body")
        # What is shown: the name, its facts, its reason and what follows them, drawn again at another width.
        self._shown: tuple[str, list[tuple[str, str]], str, list[Content]] | None = None
        self._shown_width = 0

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.body

    def show(
        self,
        rec: ColonyRecord | None,
        transitions: Iterable[Transition] = (),
        services: Mapping[str, ServiceView] | None = None,
        errors: Iterable[tuple[float, str]] = (),
        *,
        sections: Iterable[Content] = (),
        preview: Mapping[str, str] | None = None,
        preview_note: str = "",
        agent: tuple[str, str, str] | None = None,
    ) -> None:
        """`sections`: lines shown after the facts (work, resources); `preview`: service -> URL through the hive's
        preview port (None: not looked up, the colony's own address is shown); `agent`: the hive's agent_choice."""
        if rec is None:
            self._shown = None
            self.body.update(Content.styled("no colony selected", "$text-muted"))
            return
        rows: list[tuple[str, str]] = [
            ("state", rec.state + (f" (while {rec.stage})" if rec.stage else "")),
            ("ip", f"{rec.ip}  (host side {rec.host_ip})"),
            ("egress", EgressInForce.from_json(rec.egress).describe() if rec.egress else "set when the network is up"),
            ("branch", f"{rec.branch}  from {rec.base_ref} {rec.base_commit[:10]}"),
            ("repository", rec.repo),
            ("worktree", rec.worktree),
            ("database", rec.db_path),
            ("agent", _agent(agent) if agent is not None else rec.agent or "default"),
        ]
        if rec.task:
            rows.append(("task", rec.task))
        rows.append(("created", self.clock.when(rec.created_at)))
        parts = list(sections)
        parts += [Content(""), Content.styled("Preview", "bold")]
        ported = [(name, view.port) for name, view in (services or {}).items() if view.port]
        for name, url in sorted((preview or {}).items()):
            parts.append(
                Content.assemble(
                    "  ", Content.styled(url, "bold $accent"), Content.styled(f"  ({name})", "$text-muted")
                )
            )
        for name, port in ported:
            if preview is not None and name in preview:
                continue
            direct = Content.assemble(f"  http://{rec.ip}:{port}/", Content.styled(f"  ({name}", "$text-muted"))
            waiting = " · no route yet" if preview is not None and rec.state == "running" else ""
            parts.append(direct.append(Content.styled(f"{waiting})", "$text-muted")))
        if not ported and not preview:
            parts.append(Content.styled("  no service with a port", "$text-muted"))
        if preview_note:
            parts.append(Content.styled(f"  {preview_note}", "$warning"))

        parts += self._timeline(transitions)
        parts += self._errors(errors)
        self._show_facts(rec.name, rows, rec.reason, parts)

    def show_failed(self, failed: FailedSpawn, errors: Iterable[tuple[float, str]] = ()) -> None:
        """A spawn that failed and was rolled back: what was asked, where it failed, and why."""
        rows: list[tuple[str, str]] = [
            ("state", f"failed {failed.when}; everything made was removed"),
            ("repository", failed.repo),
            ("base", failed.base),
            ("agent", failed.agent or "default"),
        ]
        if failed.task:
            rows.append(("task", failed.task))
        rows.append(("started", self.clock.when(failed.started)))
        parts = [
            Content(""),
            Content.assemble(
                Content.styled("n", "bold $accent"),
                " spawns it again (same name), ",
                Content.styled("d", "bold $accent"),
                " dismisses this entry; its output is in the Logs tab.",
            ),
        ]
        parts += self._timeline(failed.transitions)
        parts += self._errors(errors)
        self._show_facts(failed.name, rows, failed.reason, parts)

    def _show_facts(self, name: str, rows: list[tuple[str, str]], reason: str, after: list[Content]) -> None:
        self._shown = (name, rows, reason, after)
        width = self.scrollable_content_region.width
        self._shown_width = width
        self.body.update(Content("\n").join([*_facts(name, rows, reason, width), *after]))

    def on_resize(self, event: events.Resize) -> None:
        if self._shown is not None and self.scrollable_content_region.width != self._shown_width:
            self._show_facts(*self._shown)

    def _timeline(self, transitions: Iterable[Transition]) -> list[Content]:
        parts = [Content(""), Content.styled("Timeline", "bold")]
        listed = list(transitions)
        for t in listed:
            style = "$error" if t.state == "failed" else ("$success" if t.state == "running" else "")
            parts.append(
                Content.assemble(
                    Content.styled(f"  {self.clock.when(t.at)}  ", "$text-muted"),
                    Content.styled(t.state, style) if style else t.state,
                    Content.styled(f"  {t.stage}" if t.stage else "", "$text-muted"),
                    Content.styled(f"  {t.reason}" if t.reason else "", "$error"),
                )
            )
        if not listed:
            parts.append(Content.styled("  (none recorded)", "$text-muted"))
        return parts

    def _errors(self, errors: Iterable[tuple[float, str]]) -> list[Content]:
        parts = [Content(""), Content.styled("Errors", "bold")]
        problems = list(errors)
        for at, message in problems[-20:]:
            parts.append(
                Content.assemble(Content.styled(f"  {self.clock.when(at)}  ", "$text-muted"), (message, "$error"))
            )
        if not problems:
            parts.append(Content.styled("  none", "$text-muted"))
        return parts
