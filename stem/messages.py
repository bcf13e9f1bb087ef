"""Messages the panels send to the app: what the user selected or asked for."""

from __future__ import annotations

from textual.message import Message


class ColonySelected(Message):
    """The highlighted colony changed (None: no colony)."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.name = name


class OpenTerminal(Message):
    """Focus the terminal of a colony."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class FileSelected(Message):
    """A changed file was highlighted (None: the whole colony); `show` asks to switch to the Diff tab."""

    def __init__(self, path: str | None, show: bool = False) -> None:
        super().__init__()
        self.path = path
        self.show = show
