"""The one-line key hint bar: the keys that work where the focus is, lazygit style."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from stem.keys import RELEASE_KEY_DISPLAY

__all__ = ["HintBar"]


class HintBar(Static):
    """Rebuilt whenever the screen's active bindings change (focus moves, a panel appears)."""

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.update_hints)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

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
        parts: list[Content] = []
        seen: set[str] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not binding.show or not active.enabled or binding.description in seen:
                continue
            seen.add(binding.description)
            display = self.app.get_key_display(binding.with_key(key))
            parts.append(Content.assemble(Content.styled(display, "bold $accent"), " ", binding.description))
        self.update(Content("  ").join(parts))

    def _key_for(self, binding_id: str) -> str | None:
        keys = getattr(self.app, "key_remaps", {}).get(binding_id)
        if not keys:
            return None
        from textual.binding import Binding

        return self.app.get_key_display(Binding(keys.split(",")[0], ""))
