"""The Diff tab: the selected file, or the whole colony, against the colony's base commit, coloured by line kind."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import RichLog

from stem.keys import bind

__all__ = ["DiffView"]


class DiffView(RichLog):
    """A unified diff; colours come from the theme (component classes), so it restyles with the theme."""

    BINDINGS = [
        bind("list.down", "scroll_down"),
        bind("list.up", "scroll_up"),
        bind("diff.target", "app.toggle_diff_target"),
    ]

    COMPONENT_CLASSES = {"diff--added", "diff--removed", "diff--hunk", "diff--header", "diff--note"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=False, markup=False, highlight=False, auto_scroll=False)
        self.title = ""
        self.text = ""

    def show(self, title: str, text: str) -> None:
        """Show `text` (unified diff); an empty diff says there is nothing to show."""
        self.title = title
        self.text = text
        self._draw()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted and self.text:
            self._draw()

    def _draw(self) -> None:
        self.clear()
        if not self.text.strip():
            self.write(Text("no changes against the base commit", self._style("diff--note")))
            return
        styles = {
            "+": self._style("diff--added"),
            "-": self._style("diff--removed"),
            "@": self._style("diff--hunk"),
        }
        header = self._style("diff--header")
        for line in self.text.splitlines():
            if line.startswith(("diff --git", "index ", "+++ ", "--- ", "new file", "deleted file", "rename ")):
                style = header
            else:
                style = styles.get(line[:1], Style())
            self.write(Text(line.expandtabs(4), style))
        self.scroll_home(animate=False)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)
