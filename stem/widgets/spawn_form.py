"""The new-colony form: name (with a suggestion), repository, base ref, agent, task; each field says what is wrong
with it right under it, before anything is made."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Static
from textual.worker import get_current_worker

from core.errors import StemError
from core.hive import Hive
from core.names import check_name
from core.settings import Settings, resolve_agent
from stem.hive_view import shown_path
from stem.keys import bind
from stem.widgets.dialogs import DialogBody

__all__ = ["NAME_POOL", "SpawnForm", "SpawnRequest", "suggest_name", "validate"]

# Suggested names: short, distinct on the first letters, and easy to say out loud.
NAME_POOL = (
    "alder", "birch", "cedar", "dogwood", "elm", "fir", "ginkgo", "hazel", "ivy", "juniper", "kauri", "larch",
    "maple", "nutmeg", "oak", "pine", "quince", "rowan", "spruce", "teak", "umbra", "willow", "yew", "zelkova",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    name: str
    repo: Path
    base: str
    agent: str | None
    task: str | None


def suggest_name(taken: Iterable[str]) -> str:
    used = set(taken)
    for name in NAME_POOL:
        if name not in used:
            return name
    n = 2
    while True:
        for name in NAME_POOL:
            if f"{name}-{n}" not in used:
                return f"{name}-{n}"
        n += 1


def validate(
    name: str, repo: str, base: str, agent: str, task: str, taken: Iterable[str], settings: Settings
) -> tuple[dict[str, str], dict[str, str], SpawnRequest | None]:
    """Check every field (blocking: runs git). Returns errors and warnings by field, and the request if valid."""
    errors: dict[str, str] = {}
    warnings: dict[str, str] = {}
    name = name.strip()
    try:
        check_name(name)
        if name in set(taken):
            errors["name"] = f"a colony named {name!r} already exists: pick another name"
    except StemError as exc:
        errors["name"] = str(exc)
    root: Path | None = None
    if not repo.strip():
        errors["repo"] = "repository is empty: give the path of a git repository"
    else:
        try:
            root = Hive.check_source(Path(repo.strip()).expanduser(), None)
        except StemError as exc:
            errors["repo"] = str(exc)
    base = base.strip() or "HEAD"
    if root is not None:
        try:
            Hive.check_source(root, base)
        except StemError as exc:
            errors["base"] = str(exc)
    agent_spec = agent.strip() or None
    task_text = task.strip() or None
    try:
        resolved = resolve_agent(agent_spec, settings, task_text)
        if not resolved.available:
            warnings["agent"] = f"{resolved.argv[0]} is not installed here: the colony gets a shell instead"
    except StemError as exc:
        errors["agent"] = str(exc)
    if errors or root is None:
        return errors, warnings, None
    return errors, warnings, SpawnRequest(name, root, base, agent_spec, task_text)


class SpawnForm(ModalScreen[SpawnRequest | None]):
    """Returns the request, or None when cancelled."""

    BINDINGS = [
        bind("dialog.cancel"),
        # A priority binding runs as the key arrives (not after the focused field's queue), so the keys typed right
        # after it are already caught as typeahead for the new colony's agent.
        bind("dialog.submit"),
    ]
    # Keys typed right after `n` are the name's: the form must have the focus before the first one arrives (the
    # app's AUTO_FOCUS is None, so a screen focuses nothing unless it says so).
    AUTO_FOCUS = "#spawn-name"

    FIELDS = ("name", "repo", "base", "agent", "task")

    def __init__(
        self, *, taken: Iterable[str], repo: Path | None, settings: Settings, again: SpawnRequest | None = None
    ) -> None:
        """`again`: a request to fill the form with (a failed spawn, to try once more after a fix)."""
        super().__init__()
        self.again = again
        self.taken = list(taken)
        self.default_repo = repo
        self.settings = settings
        self.request: SpawnRequest | None = None
        # Keys typed from ctrl+s until the app has the new colony's terminal ready were meant for its agent: the app
        # collects them here (before any field sees them) and hands them on with the request. `validating` stays
        # set after a good check, through the dismissal, until the app takes the keys.
        self.validating = False
        self.typeahead: list[tuple[str, str | None]] = []
        # Keys typed between `n` and the name field having the focus wait for it (stem/key_order.py).
        self.keys_ready = False

    def compose(self) -> ComposeResult:
        presets = sorted(self.settings.agents)
        with Vertical(id="spawn-form", classes="dialog"):
            with DialogBody(id="spawn-body"):
                yield Static("New colony" if self.again is None else "Spawn again", classes="dialog-title")
                yield Static(
                    Content.from_markup(
                        "[b $accent]enter[/] next field   [b $accent]ctrl+s[/] spawn   [b $accent]esc[/] cancel"
                    ),
                    classes="dialog-hint",
                )
                again = self.again
                name = again.name if again else suggest_name(self.taken)
                repo = shown_path(again.repo) if again else shown_path(self.default_repo) if self.default_repo else ""
                yield from self._field("name", "Name", name, "a DNS label: lowercase, digits, -")
                yield from self._field("repo", "Repository", repo, "path to a git repository")
                base = again.base if again else "HEAD"
                yield from self._field("base", "Base ref", base, "branch, tag or commit to start from")
                yield from self._field(
                    "agent",
                    "Agent",
                    (again.agent if again else None) or self.settings.default_agent,
                    f"preset ({', '.join(presets)}) or a command",
                    SuggestFromList(presets),
                )
                task = (again.task if again else None) or ""
                yield from self._field("task", "Task", task, "what the agent should do (optional)")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Spawn", variant="primary", id="spawn-submit")
                yield Button("Cancel", id="spawn-cancel")

    def on_mount(self) -> None:
        blink = getattr(self.app, "blink", True)
        for box in self.query(Input):
            box.cursor_blink = blink
        self.call_after_refresh(self._opened)

    def _opened(self) -> None:
        """The name field has the focus: the keys typed meanwhile, waiting in the app, come to the form now."""
        # Not scrolled to: on a short terminal (80x24) that hid the form's title, hint and the name's label.
        self.set_focus(self.query_one("#spawn-name", Input), scroll_visible=False)
        self.query_one("#spawn-body").scroll_home(animate=False)
        self.keys_ready = True

    def takes_key(self, event: events.Key) -> bool:
        """Called by the app for every key it hands on while the form is open, before it goes to the focused field:
        enter moves the focus on at once (the next keys go to the next field)."""
        if event.key != "enter" or self.app.screen is not self:
            return False
        focused = self.focused
        if not isinstance(focused, Input) or focused not in self.query(Input):
            return False
        self._move_on(focused)
        return True

    def _move_on(self, field: Input) -> None:
        """Enter in `field`: the next field has the focus now, or, after the last, the form is submitted."""
        inputs = list(self.query(Input))
        index = inputs.index(field)
        if index + 1 < len(inputs):
            self.set_focus(inputs[index + 1])
        else:
            self.action_submit()

    def _field(
        self, key: str, label: str, value: str, placeholder: str, suggester: SuggestFromList | None = None
    ) -> Iterable[Label | Input]:
        yield Label(label, classes="field-label")
        yield Input(value=value, placeholder=placeholder, id=f"spawn-{key}", suggester=suggester)
        yield Label("", id=f"spawn-{key}-error", classes="field-error hidden")

    def value(self, key: str) -> str:
        return self.query_one(f"#spawn-{key}", Input).value

    def set_message(self, key: str, text: str, warning: bool = False) -> None:
        label = self.query_one(f"#spawn-{key}-error", Label)
        label.update(text)
        label.set_class(not text, "hidden")
        label.set_class(warning, "-warning")

    def shown_errors(self) -> dict[str, str]:
        """Field -> message, for each field showing an error now."""
        out: dict[str, str] = {}
        for key in self.FIELDS:
            label = self.query_one(f"#spawn-{key}-error", Label)
            if not label.has_class("hidden") and not label.has_class("-warning"):
                out[key] = str(label.content)
        return out

    @on(Input.Changed, "#spawn-name")
    def _name_changed(self, event: Input.Changed) -> None:
        # The name is checked as it is typed; the rest needs git, so it is checked on submit.
        try:
            check_name(event.value.strip())
            message = (
                f"a colony named {event.value.strip()!r} already exists" if event.value.strip() in self.taken else ""
            )
        except StemError as exc:
            message = str(exc)
        self.set_message("name", message)

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self._move_on(event.input)

    @on(Button.Pressed, "#spawn-submit")
    def _pressed_submit(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#spawn-cancel")
    def _pressed_cancel(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self.query_one("#spawn-submit", Button).disabled = True
        self.validating = True
        self.typeahead.clear()
        # ctrl+s is acted on as it arrives: keys typed before it may still wait in a field's queue. The fields are
        # read once each has taken what it was sent (a callback queued behind those keys, in every field).
        boxes = list(self.query(Input))
        waiting = [len(boxes)]

        def taken() -> None:
            waiting[0] -= 1
            if waiting[0] == 0:
                self._check({key: self.value(key) for key in self.FIELDS}, self.finish)

        for box in boxes:
            box.call_later(taken)

    @work(thread=True, exclusive=True, group="spawn-form", exit_on_error=False)
    def _check(self, values: dict[str, str], then: Callable[..., None]) -> None:
        result = validate(**values, taken=self.taken, settings=self.settings)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(then, *result)

    def finish(self, errors: dict[str, str], warnings: dict[str, str], request: SpawnRequest | None) -> None:
        self.query_one("#spawn-submit", Button).disabled = False
        for key in self.FIELDS:
            if key in errors:
                self.set_message(key, errors[key])
            else:
                self.set_message(key, warnings.get(key, ""), warning=key in warnings)
        if request is None:
            self.validating = False
            self.typeahead.clear()  # typed for an agent that will not come: the user reads the errors instead
            first = next(key for key in self.FIELDS if key in errors)
            self.query_one(f"#spawn-{first}", Input).focus()
            return
        self.request = request
        self.dismiss(request)
