"""Modal dialogs: a confirmation that says exactly what will happen, and the key help."""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from stem.keys import bind

__all__ = ["ConfirmScreen", "DialogBody", "HelpScreen"]


class DialogBody(VerticalScroll, can_focus=False):
    """What a dialog says and asks, above its buttons (docked below it, in the dialog): on a small terminal it
    scrolls, the focused field scrolled into sight, and the buttons stay in sight. (Buttons docked inside the
    scrolling part covered its last rows, a field there was never scrolled out from under them, and Tab went to
    the buttons before the fields below their place.)"""

    DEFAULT_CLASSES = "dialog-body"


class ConfirmScreen(ModalScreen[bool]):
    """Asks before something that cannot be undone; `y` or the confirm button says yes, `n`/escape no."""

    BINDINGS = [
        bind("dialog.cancel"),
        bind("dialog.no"),
        bind("dialog.confirm"),
    ]

    def __init__(self, title: str, body: Content | str, confirm: str, *, danger: bool = True, id: str | None = None):
        super().__init__(id=id)
        self.title_text = title
        self.body = body
        self.confirm_label = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            with DialogBody():
                yield Static(self.title_text, classes="dialog-title")
                yield Static(self.body, classes="confirm-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self.confirm_label} (y)", variant="error" if self.danger else "primary", id="confirm-yes"
                )
                yield Button("Cancel (n)", id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def set_body(self, body: Content | str) -> None:
        """Say something else (what it asks about changed while it was open)."""
        self.body = body
        if self.is_mounted:
            self.query_one(".confirm-body", Static).update(body)

    @on(Button.Pressed, "#confirm-yes")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def action_cancel(self) -> None:
        self.dismiss(False)


class HelpScreen(ModalScreen[None]):
    """The keys active where the focus was when `?` was pressed, with their binding ids for config.toml."""

    BINDINGS = [bind("dialog.cancel", "close"), bind("help.close")]

    def __init__(self, context: str, rows: Iterable[tuple[str, str, str]]) -> None:
        super().__init__()
        self.context = context
        self.rows = list(rows)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Static(f"Keys · {self.context}", classes="dialog-title")
            with VerticalScroll(id="help-keys"):
                width = max((len(key) for key, _, _ in self.rows), default=4) + 2
                lines = [
                    Content.assemble(
                        Content.styled(f"{key:>{width}}", "bold $accent"),
                        "  ",
                        Content(f"{description:<24}"),
                        Content.styled(binding_id, "$text-muted"),
                    )
                    for key, description, binding_id in self.rows
                ]
                yield Static(Content("\n").join(lines))
            yield Static(
                Content.from_markup(
                    "[$text-muted]Remap any key in config.toml:[/] [b]\\[keys][/b] [$text-muted]binding id =[/] "
                    '[b]"key"[/b]   [$text-muted]esc closes[/]'
                ),
                classes="help-foot",
            )

    def on_mount(self) -> None:
        # The list has the focus: on a short terminal (80x24) the arrows, page keys, home and end scroll it to the
        # keys below its last row (with nothing focused they did nothing, and only a mouse wheel reached them).
        self.query_one("#help-keys", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
