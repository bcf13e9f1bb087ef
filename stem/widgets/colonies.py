"""Panel 1: the colonies, one entry each (state badge, name, age; branch, agent activity, services), with a filter."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from stem.keys import bind
from stem.messages import ColonySelected, OpenTerminal
from stem.widgets.side_panels import PanelList

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
    if row.activity:
        style = _ACTIVITY_STYLE.get(row.activity, "$text-muted")
        parts.append(Content.styled(row.activity, style))
    if row.services:
        style = "$error" if row.services_failed else ("$success" if row.services_up == row.services else "$warning")
        parts.append(Content.styled(f"svc {row.services_up}/{row.services}", style))
    second = Content("  ").append(Content(" · ").join(parts))
    if row.title:
        room = max(1, width - 2 - second.cell_length - 3)
        title = row.title if len(row.title) <= room else row.title[: room - 1] + "…"
        second = Content(" · ").join([second, Content.styled(title, "italic $text-muted")])
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
        self.rows = rows
        self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild()

    def _rebuild(self) -> None:
        keep = self.selected
        width = max(20, self.scrollable_content_region.width or 36)
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

    def key_escape(self) -> None:
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
