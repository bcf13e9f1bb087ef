"""Events the core publishes: the UI and `stem serve` subscribe instead of polling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StateChanged:
    colony: str
    state: str
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


Event = StateChanged | LogLine | ColonyRemoved | Notice
