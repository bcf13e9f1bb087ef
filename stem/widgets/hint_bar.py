"""The one-line key hint bar: the keys that work where the focus is, lazygit style."""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Input, Static

from stem.keys import RELEASE_KEY_DISPLAY

__all__ = ["HintBar"]


class HintBar(Static):
    """Rebuilt whenever the active screen's bindings change (focus moves, a panel appears, a dialog opens): the
    keys shown are those of the screen on top (the spawn form's while it is open), not of the screen beneath."""

    def on_mount(self) -> None:
        self._watched: Screen[object] | None = None
        self.app.screen_change_signal.subscribe(self, self._screen_changed)
        self._screen_changed(self.app.screen)

    def on_unmount(self) -> None:
        self.app.screen_change_signal.unsubscribe(self)
        if self._watched is not None:
            self._watched.bindings_updated_signal.unsubscribe(self)

    def _screen_changed(self, screen: Screen[object]) -> None:
        if screen is not self._watched:
            if self._watched is not None:
                self._watched.bindings_updated_signal.unsubscribe(self)
            self._watched = screen
            screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.update_hints)

    def _bindings_changed(self, _screen: object) -> None:
        self.update_hints()

    def update_hints(self) -> None:
        from stem.widgets.terminal import TerminalView

        focused = self.app.focused
        if isinstance(focused, TerminalView):
            release = self._key_for("terminal.release") or RELEASE_KEY_DISPLAY
            self.update(
                Content.assemble(
                    Content.styled(f" {release} ", "reverse $accent"),
                    " back to panels   ",
                    Content.styled("every other key goes to the agent", "$text-muted"),
                )
            )
            return
        if isinstance(focused, Input) and focused.id == "colony-filter":
            # The line's own keys (its Input's bindings are hidden, its panel's escape is too): what ends it.
            self.update(
                Content.assemble(
                    Content.styled("enter", "bold $accent"),
                    " keep the filter  ",
                    Content.styled("esc", "bold $accent"),
                    " clear it  ",
                    Content.styled("type part of a colony's name or branch", "$text-muted"),
                )
            )
            return
        parts: list[Content] = []
        help_hint: Content | None = None
        seen: set[str] = set()
        for key, active in self.app.screen.active_bindings.items():
            binding = active.binding
            if not binding.show or not active.enabled or binding.description in seen:
                continue
            seen.add(binding.description)
            display = self.app.get_key_display(binding.with_key(key))
            hint = Content.assemble(Content.styled(display, "bold $accent"), " ", binding.description)
            parts.append(hint)
            if binding.id == "app.help":
                help_hint = hint
        # Whole hints that fit, not one cut in the middle: at 80 columns `? keys`, the key to all the others, and
        # `q quit` were lost. The last ones go first, never the help's.
        width = self.size.width or self.app.size.width
        while parts and sum(map(len, parts)) + 2 * (len(parts) - 1) > width:
            droppable = [i for i, hint in enumerate(parts) if hint is not help_hint]
            if not droppable:
                break
            del parts[droppable[-1]]
        self.update(Content("  ").join(parts))

    def on_resize(self) -> None:
        self.update_hints()

    def _key_for(self, binding_id: str) -> str | None:
        keys = getattr(self.app, "key_remaps", {}).get(binding_id)
        if not keys:
            return None
        from textual.binding import Binding

        return self.app.get_key_display(Binding(keys.split(",")[0], ""))
