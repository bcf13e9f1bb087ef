"""Every key of the app by binding id. Users remap them in config.toml, e.g. `[keys] colony.destroy = "x"`, and
the app applies that with `App.set_keymap`. `?` in the app lists the keys active where the focus is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from textual.binding import Binding

from core.errors import ConfigError

__all__ = ["KEYS", "RELEASE_KEY_DISPLAY", "KeySpec", "bind", "keymap"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    keys: str  # Textual key names, comma separated
    action: str
    description: str
    show: bool = True  # in the hint bar
    key_display: str | None = None
    priority: bool = False


KEYS: dict[str, KeySpec] = {
    # the whole app
    "app.quit": KeySpec("q", "quit", "quit"),
    "app.help": KeySpec("question_mark", "help", "keys"),
    "app.palette": KeySpec("colon,ctrl+p", "command_palette", "commands"),
    "app.new": KeySpec("n", "new_colony", "new"),
    "app.focus_colonies": KeySpec("1", "focus_panel('colonies')", "colonies", show=False),
    "app.focus_services": KeySpec("2", "focus_panel('services')", "services", show=False),
    "app.focus_changes": KeySpec("3", "focus_panel('changes')", "changes", show=False),
    "app.focus_main": KeySpec("0", "focus_panel('main')", "main view", show=False),
    "app.next_tab": KeySpec("right_square_bracket", "next_tab", "next tab", show=False),
    "app.prev_tab": KeySpec("left_square_bracket", "prev_tab", "previous tab", show=False),
    "app.focus_next": KeySpec("tab", "app.focus_next", "next panel", show=False),
    "app.focus_previous": KeySpec("shift+tab", "app.focus_previous", "previous panel", show=False),
    # lists
    "list.down": KeySpec("j", "cursor_down", "down", show=False),
    "list.up": KeySpec("k", "cursor_up", "up", show=False),
    # the colonies panel
    "colony.terminal": KeySpec("enter", "open_terminal", "terminal"),
    "colony.stop_start": KeySpec("s", "stop_start", "stop/start"),
    "colony.destroy": KeySpec("d", "destroy", "destroy"),
    "colony.filter": KeySpec("slash", "filter", "filter"),
    "colony.filter_clear": KeySpec("escape", "clear_filter", "clear filter", show=False),
    "colony.merge": KeySpec("m", "merge", "merge"),
    "colony.commit": KeySpec("c", "commit", "commit"),
    "colony.sync": KeySpec("u", "sync", "sync"),
    # the services panel
    "service.restart": KeySpec("r", "restart_service", "restart"),
    # the changes panel
    "changes.diff": KeySpec("enter", "show_diff", "diff"),
    "diff.target": KeySpec("t", "toggle_diff_target", "vs target"),
    # the logs tab
    "logs.follow": KeySpec("f", "toggle_follow", "follow"),
    "logs.service": KeySpec("v", "next_source", "service"),
    "logs.search": KeySpec("slash", "search", "search"),
    "logs.search_clear": KeySpec("escape", "clear_search", "clear search", show=False),
    "logs.scroll_left": KeySpec("left", "scroll_left", "scroll left", show=False),
    "logs.scroll_right": KeySpec("right", "scroll_right", "scroll right", show=False),
    # the terminal tab: the one key a focused terminal keeps for itself
    "terminal.release": KeySpec(
        "ctrl+right_square_bracket", "release", "back to panels", key_display="ctrl+]", priority=True
    ),
    # the terminal tab while the terminal is not entered: enter gives it the keys
    "terminal.enter": KeySpec("enter", "enter_terminal", "enter terminal"),
    # dialogs
    "dialog.cancel": KeySpec("escape", "cancel", "cancel"),
    "dialog.confirm": KeySpec("y", "confirm", "yes"),
    "dialog.no": KeySpec("n", "cancel", "no", show=False),
    "dialog.submit": KeySpec("ctrl+s", "submit", "spawn", priority=True),
    "help.close": KeySpec("question_mark,q", "close", "close", show=False),
    "merge.confirm": KeySpec("y", "confirm", "merge"),
    "merge.squash": KeySpec("s", "toggle_squash", "squash"),
}

RELEASE_KEY_DISPLAY = "ctrl+]"


def bind(
    binding_id: str, action: str | None = None, *, priority: bool | None = None, show: bool | None = None
) -> Binding:
    """The Binding for `binding_id` (its default keys; the keymap remaps them)."""
    spec = KEYS[binding_id]
    return Binding(
        spec.keys,
        action or spec.action,
        spec.description,
        show=spec.show if show is None else show,
        key_display=spec.key_display,
        priority=spec.priority if priority is None else priority,
        id=binding_id,
    )


def keymap(remaps: Mapping[str, str], where: Mapping[str, str] | None = None) -> dict[str, str]:
    """The user's [keys] table as a Textual keymap; an unknown binding id is a config error. `where`: the file and
    line of each remap (Settings.key_lines), which the error starts with."""

    def at(binding_id: str) -> str:
        return (where or {}).get(binding_id, "config.toml")

    for binding_id in remaps:
        if binding_id not in KEYS:
            close = [k for k in KEYS if k.split(".")[-1] == binding_id.split(".")[-1]]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{at(binding_id)}: [keys] {binding_id}: no such binding{hint}; `?` in stem lists them")
    mapped = {binding_id: keys for binding_id, keys in remaps.items() if keys}
    _check_clashes(mapped, at)
    return mapped


# Where a binding works: its own panel's (or dialog's) bindings and the app's are live at once; a modal dialog's are
# alone (the app's stay under it).
_MODAL = ("dialog", "help", "merge")


def _check_clashes(mapped: Mapping[str, str], at: Callable[[str], str]) -> None:
    """A remapped key that another binding live in the same place has too: one of them would never run (a stop key
    taken by destroy, say). Bindings that share a key by default (enter, escape in different roles) are left be."""

    def keys_of(binding_id: str, remapped: bool) -> set[str]:
        text = mapped.get(binding_id, KEYS[binding_id].keys) if remapped else KEYS[binding_id].keys
        return {key.strip() for key in text.split(",") if key.strip()}

    def together(a: str, b: str) -> bool:
        sa, sb = a.split(".")[0], b.split(".")[0]
        if sa == sb:
            return True
        if "app" in (sa, sb):
            return (sb if sa == "app" else sa) not in _MODAL
        return False

    for binding_id in mapped:
        mine = keys_of(binding_id, True)
        for other in KEYS:
            if other == binding_id or not together(binding_id, other):
                continue
            if keys_of(binding_id, False) & keys_of(other, False):
                continue  # shared by design
            shared = mine & keys_of(other, True)
            if shared:
                raise ConfigError(
                    f"{at(binding_id)}: [keys] {binding_id} = {mapped[binding_id]!r}: {sorted(shared)[0]} is also "
                    f"{other} ({KEYS[other].description}) there, which would never run: give one of them another key"
                )
