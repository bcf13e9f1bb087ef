"""Panels 2 and 3: the selected colony's services (state, port, restarts) and changed files (+/- lines)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from textual import on
from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from core.overlap import OverlapLevel
from stem.keys import bind
from stem.messages import FileSelected

if TYPE_CHECKING:
    from core.events import FileChange
    from core.host.client import ServiceView

__all__ = ["ChangesList", "PanelList", "ServicesList"]

_SERVICE_STYLE = {
    "ready": "$success",
    "running": "$success",
    "starting": "$warning",
    "exited": "$warning",  # ended by itself (0): restart = "always" starts it again
    "crashed": "$error",
    "failed": "$error",
    "stopped": "$text-muted",
}
# An untracked file (never added: git status's `??`) reads apart from one added to the index or committed (A).
_STATUS_LETTER = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R", "untracked": "?"}
_STATUS_STYLE = {
    "added": "$success",
    "modified": "$warning",
    "deleted": "$error",
    "renamed": "$accent",
    "untracked": "$text-muted",
}


def _overlap_mark(found: tuple[OverlapLevel, tuple[str, ...]] | None, binary: bool = False) -> Content:
    """`  ⚠ beech` (beech changes the file too) or `  ‼ beech` (the same lines, or a binary file both change
    differently: the merges will conflict)."""
    if found is None:
        return Content("")
    level, others = found
    if level == OverlapLevel.HUNK:
        what = "binary, also" if binary else "same lines as"
        return Content.styled(f"  ‼ {what} {', '.join(others)}", "bold $error")
    return Content.styled(f"  ⚠ also {', '.join(others)}", "$warning")


def _counts(change: FileChange) -> tuple[Content, ...]:
    """`+3 -1`, or `binary` for a file git counts no lines of."""
    if change.binary:
        return (Content.styled("binary", "$text-muted"),)
    return (
        Content.styled(f"+{change.added}", "$success"),
        Content(" "),
        Content.styled(f"-{change.removed}", "$error"),
    )


class PanelList(OptionList):
    """A panel's list: entries by id, replaced wholesale as the core reports, the highlighted one kept."""

    @property
    def selected(self) -> str | None:
        """The highlighted entry's id."""
        index = self.highlighted
        if index is None or index >= self.option_count:
            return None
        return self.get_option_at_index(index).id

    def replace(self, options: list[Option], empty: str) -> None:
        """Show `options` (or `empty`, greyed, when there are none), keeping the highlighted id highlighted."""
        keep = self.selected
        if not options:
            options = [Option(Content.styled(empty, "$text-muted"), disabled=True)]
        self.clear_options()
        self.add_options(options)
        ids = [o.id for o in options]
        if keep in ids:
            self.highlighted = ids.index(keep)
        elif not options[0].disabled:
            self.highlighted = 0


class ServicesList(PanelList):
    """Panel 2."""

    BINDINGS = [bind("list.down"), bind("list.up"), bind("service.restart", "app.restart_service")]

    def on_mount(self) -> None:
        self.border_title = "[2] Services"

    def show(self, services: Mapping[str, ServiceView], note: str | None = None) -> None:
        """`services`: core.host.client.ServiceView (name, state, port, restarts) by name."""
        options: list[Option] = []
        for name, runner in services.items():
            state = runner.state
            port = runner.port
            restarts = runner.restarts
            style = _SERVICE_STYLE.get(state, "$text-muted")
            prompt = Content.assemble(
                Content.styled(f"{name:<12}", "bold"),
                " ",
                Content.styled(f"{state:<9}", style),
                Content.styled(f":{port}" if port else "  -", "$text-muted"),
                Content.styled(f"  ↻{restarts}" if restarts else "", "$warning"),
            )
            options.append(Option(prompt, id=name))
        self.replace(options, note or "no services")


class ChangesList(PanelList):
    """Panel 3: the first entry is the whole colony, then one per file."""

    BINDINGS = [bind("list.down"), bind("list.up"), bind("changes.diff"), bind("diff.target", "app.toggle_diff_target")]

    def on_mount(self) -> None:
        self.border_title = "[3] Changes"

    @property
    def selected(self) -> str | None:
        """The highlighted file's path; None on the "all files" entry."""
        option_id = super().selected
        return None if option_id == "*" else option_id

    def show(
        self,
        files: Iterable[FileChange] | None,
        note: str | None = None,
        overlaps: Mapping[str, tuple[OverlapLevel, tuple[str, ...]]] | None = None,
    ) -> None:
        """`files`: FileChange-like (path, status, added, removed, binary); None when the core does not watch.
        `overlaps`: the files other colonies change too (path -> level, colonies), flagged on their entries."""
        overlaps = overlaps or {}
        options: list[Option] = []
        listed = list(files or ())
        if listed:
            added = sum(f.added for f in listed)
            removed = sum(f.removed for f in listed)
            binary = sum(f.binary for f in listed)
            counts: list[Content] = []
            if binary < len(listed):
                counts += [
                    Content.styled(f"+{added}", "$success"),
                    Content(" "),
                    Content.styled(f"-{removed}", "$error"),
                ]
            if binary:
                counts += [Content("  " if counts else ""), Content.styled(f"{binary} binary", "$text-muted")]
            options.append(
                Option(
                    Content.assemble(
                        Content.styled(f"all {len(listed)} file{'s' if len(listed) != 1 else ''}", "bold"),
                        "  ",
                        *counts,
                    ),
                    id="*",
                )
            )
        for change in listed:
            letter = _STATUS_LETTER.get(change.status, "·")
            options.append(
                Option(
                    Content.assemble(
                        Content.styled(letter, _STATUS_STYLE.get(change.status, "$text-muted")),
                        " ",
                        change.path,
                        "  ",
                        *_counts(change),
                        _overlap_mark(overlaps.get(change.path), change.binary),
                    ),
                    id=change.path,
                )
            )
        self.replace(options, note or "no changes")
        self.border_title = f"[3] Changes ({len(listed)})" if listed else "[3] Changes"
        shared = [overlaps[f.path][0] for f in listed if f.path in overlaps]
        if shared:
            mark = "‼" if OverlapLevel.HUNK in shared else "⚠"
            self.border_title += f" {mark} {len(shared)} shared"

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self.post_message(FileSelected(self.selected))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(FileSelected(self.selected, show=True))

    def action_show_diff(self) -> None:
        self.post_message(FileSelected(self.selected, show=True))
