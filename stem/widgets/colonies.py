"""Panel 1: the colonies, one entry each (state badge, name, age; branch, agent activity, services), with a filter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from stem.keys import bind
from stem.messages import ColonySelected, OpenTerminal
from stem.widgets.side_panels import PanelList
from stem.widgets.work_badges import WorkBadge, merge_parts, overlap_part, usage_part

__all__ = ["ColoniesList", "ColoniesPanel", "ColonyRow", "state_badge"]

_STATE_STYLE = {
    "running": "$success",
    "stopped": "$text-muted",
    "failed": "$error",
}
_ACTIVITY_STYLE = {
    "working": "$accent",
    "idle": "$text-muted",
    "attention": "$warning bold",
    "exited": "$error",
}


@dataclass(frozen=True, slots=True)
class ColonyRow:
    """What the colonies panel shows of one colony."""

    name: str
    state: str
    stage: str
    branch: str
    age: str
    activity: str | None = None  # None: no agent
    title: str = ""  # the agent's window title (OSC 0/2)
    services_up: int = 0
    services: int = 0
    services_failed: int = 0
    note: str = ""  # in place of the second line's details (a failed spawn: nothing of it is left)
    work: WorkBadge | None = None  # ahead/behind, merges clean or conflicts, overlaps, usage


def state_badge(state: str) -> Content:
    style = _STATE_STYLE.get(state, "$warning")
    glyph = {"running": "●", "stopped": "○", "failed": "✖"}.get(state, "◌")
    return Content.from_markup(f"[{style}]{glyph} {state}[/]")


def _prompt(row: ColonyRow, width: int) -> Content:
    glyph_style = _STATE_STYLE.get(row.state, "$warning")
    glyph = {"running": "●", "stopped": "○", "failed": "✖"}.get(row.state, "◌")
    state = row.state if row.state != "failed" or not row.stage else f"failed: {row.stage}"
    right = f"{state} {row.age}"
    room = max(1, width - 2 - len(right) - 1)
    name = row.name if len(row.name) <= room else row.name[: room - 1] + "…"
    first = Content.assemble(
        Content.from_markup(f"[{glyph_style}]{glyph}[/] "),
        Content.styled(name, "bold"),
        " " * max(1, width - 2 - len(name) - len(right)),
        Content.from_markup(f"[{glyph_style}]$state[/] [$text-muted]$age[/]", state=state, age=row.age),
    )
    if row.note:
        return Content("\n").join([first, Content("  ").append(Content.styled(row.note, "$text-muted"))])
    parts: list[Content] = [Content.styled(row.branch, "$text-muted")]
    work = row.work or WorkBadge()
    parts += merge_parts(work)
    overlap = overlap_part(work)
    if overlap is not None:
        parts.append(overlap)
    if row.activity:
        style = _ACTIVITY_STYLE.get(row.activity, "$text-muted")
        parts.append(Content.styled(row.activity, style))
    if row.services:
        style = "$error" if row.services_failed else ("$success" if row.services_up == row.services else "$warning")
        parts.append(Content.styled(f"svc {row.services_up}/{row.services}", style))
    second = Content("  ").append(Content(" · ").join(parts))
    if second.cell_length > width:  # a narrow panel: one line, cut, never wrapped into the next row's place
        second = second.truncate(width, ellipsis=True)
    room = width - 2 - second.cell_length - 3
    if row.title and room >= 4:  # what the agent says it does, before the usage figures (Info has those too)
        title = row.title if len(row.title) <= room else row.title[: room - 1] + "…"
        second = Content(" · ").join([second, Content.styled(title, "italic $text-muted")])
    usage = usage_part(work)
    if usage is not None and second.cell_length + 3 + usage.cell_length <= width - 2:
        second = Content(" · ").join([second, usage])
    return Content("\n").join([first, second])


class ColoniesList(PanelList):
    """The list itself; the panel around it holds the filter."""

    BINDINGS = [
        bind("list.down"),
        bind("list.up"),
        bind("colony.terminal"),
        bind("colony.stop_start", "app.stop_start"),
        bind("colony.destroy", "app.destroy"),
        bind("colony.filter"),
        bind("colony.merge", "app.merge"),
        bind("colony.commit", "app.commit"),
        bind("colony.sync", "app.sync"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[ColonyRow] = []
        self.filter_text = ""
        self._prompts: dict[tuple[ColonyRow, int], Content] = {}

    def set_rows(self, rows: list[ColonyRow]) -> None:
        """Show `rows` (filtered), keeping the highlighted colony highlighted. Rows as shown already are kept."""
        if rows == self.rows and self.option_count:
            return
        before, self.rows = self.rows, rows
        if self.option_count and [r.name for r in rows] == [r.name for r in before]:
            # The same colonies: only the rows that read differently get a new prompt (a usage tick or a merge
            # status changes a few rows; a rebuild of the whole list would cost a frame of every row).
            changed = {new.name: new for old, new in zip(before, rows, strict=True) if old != new}
            width = self._width()
            for index in range(self.option_count):
                row = changed.get(str(self.get_option_at_index(index).id))
                if row is not None:
                    self.replace_option_prompt_at_index(index, self._prompt(row, width))
            return
        self._rebuild()

    def set_ages(self, ages: Mapping[str, str]) -> None:
        """The colonies' ages now, by name: only the rows whose age reads differently get a new prompt; the list is
        not rebuilt (a timer calls this every second)."""
        changed: dict[str, ColonyRow] = {}
        for index, row in enumerate(self.rows):
            age = ages.get(row.name)
            if age is not None and age != row.age:
                self.rows[index] = changed[row.name] = replace(row, age=age)
        if not changed:
            return
        width = self._width()
        for index in range(self.option_count):
            aged = changed.get(str(self.get_option_at_index(index).id))
            if aged is not None:
                self.replace_option_prompt_at_index(index, self._prompt(aged, width))

    def _width(self) -> int:
        return max(20, self.scrollable_content_region.width or 36)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild()

    def _rebuild(self) -> None:
        keep = self.selected
        width = self._width()
        shown = [r for r in self.rows if self.filter_text in r.name.lower() or self.filter_text in r.branch.lower()]
        with self.app.batch_update():
            self.clear_options()
            self.add_options([Option(self._prompt(row, width), id=row.name) for row in shown])
            if shown:
                names = [r.name for r in shown]
                self.highlighted = names.index(keep) if keep in names else 0
        if self.selected != keep:
            self.post_message(ColonySelected(self.selected))

    def _prompt(self, row: ColonyRow, width: int) -> Content:
        """A row's two lines, built once per (row, width): markup is parsed only for rows that changed."""
        key = (row, width)
        prompt = self._prompts.get(key)
        if prompt is None:
            prompt = self._prompts[key] = _prompt(row, width)
            if len(self._prompts) > 4 * max(len(self.rows), 64):
                self._prompts = {key: prompt}
        return prompt

    def on_resize(self) -> None:
        if self.rows:
            self._rebuild()

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self.post_message(ColonySelected(event.option.id))

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()

    def action_open_terminal(self) -> None:
        if self.selected is not None:
            self.post_message(OpenTerminal(self.selected))

    def action_filter(self) -> None:
        panel = self.parent
        if isinstance(panel, ColoniesPanel):
            panel.open_filter()


class ColoniesPanel(Vertical):
    """Panel 1, titled with its number; `/` opens the filter line above the list."""

    BINDINGS = [bind("colony.filter_clear")]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter colonies…", id="colony-filter", classes="hidden", disabled=True)
        yield ColoniesList(id="colony-list")

    def on_mount(self) -> None:
        self.border_title = "[1] Colonies"
        self.query_one(Input).cursor_blink = getattr(self.app, "blink", True)

    def open_filter(self) -> None:
        box = self.query_one("#colony-filter", Input)
        box.remove_class("hidden")
        box.disabled = False
        box.focus()

    @on(Input.Changed, "#colony-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_one(ColoniesList).set_filter(event.value)
        self._title()

    @on(Input.Submitted, "#colony-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            event.input.add_class("hidden")
            event.input.disabled = True
        self.query_one(ColoniesList).focus()

    def action_clear_filter(self) -> None:
        """Escape in the filter clears it."""
        box = self.query_one("#colony-filter", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.add_class("hidden")
            box.disabled = True
            self.query_one(ColoniesList).set_filter("")
            self.query_one(ColoniesList).focus()
            self._title()

    def _title(self) -> None:
        text = self.query_one(ColoniesList).filter_text
        self.border_title = f"[1] Colonies /{text}" if text else "[1] Colonies"
