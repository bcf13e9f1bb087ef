"""Events the core publishes: the UI and `stem serve` subscribe instead of polling."""

from __future__ import annotations

from dataclasses import dataclass

from core.lifecycle import ColonyState


@dataclass(frozen=True, slots=True)
class StateChanged:
    colony: str
    state: ColonyState
    stage: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LogLine:
    colony: str
    seq: int
    at: float
    source: str
    text: str


@dataclass(frozen=True, slots=True)
class ColonyRemoved:
    colony: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should see (an actor restart, a kept branch); `level` is info, warning or error."""

    colony: str
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A service's state: starting, ready, running, crashed (with `code`), exited (0, to be restarted), stopped;
    `detail` holds last lines."""

    colony: str
    service: str
    state: str
    code: int | None = None
    restarts: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AgentActivity:
    """working (output recently), idle (quiet), attention (bell or an approval prompt), exited (with `code`)."""

    colony: str
    activity: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class ScreenChanged:
    """Rows of the colony agent's screen that changed since the last event (one event per output batch)."""

    colony: str
    rows: frozenset[int]


@dataclass(frozen=True, slots=True)
class ScrollbackLoaded:
    """Scrollback lines of the colony's agent arrived from its host: what shows them can redraw."""

    colony: str


@dataclass(frozen=True, slots=True)
class HiveChanged:
    """Another stem process changed the registry (a spawn, stop, start or destroy from a shell or another UI)."""


@dataclass(frozen=True, slots=True)
class LogsLoaded:
    """The colony's whole log arrived from its host (on connect): what shows it can reload."""

    colony: str


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    status: str  # added, modified, deleted, renamed, untracked (new in the worktree, never added)
    added: int  # lines; 0 for binary files
    removed: int
    binary: bool = False  # git reads it as binary and counts no lines (numstat's "-"): shown as such, not +0 -0


@dataclass(frozen=True, slots=True)
class ChangesUpdated:
    """The colony's changed-file list against its base commit."""

    colony: str
    files: tuple[FileChange, ...]


Event = (
    StateChanged
    | LogLine
    | ColonyRemoved
    | Notice
    | ServiceState
    | AgentActivity
    | ScreenChanged
    | ScrollbackLoaded
    | LogsLoaded
    | HiveChanged
    | ChangesUpdated
)
