"""Colony states, the transitions between them (checked by the registry) and which operations each allows."""

from __future__ import annotations

import enum


class ColonyState(enum.StrEnum):
    """A colony's lifecycle state. The values are what hive.db and `stem ls --json` hold."""

    SPAWNING = "spawning"
    PROVISIONING = "provisioning"
    BUILDING = "building"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DESTROYING = "destroying"  # recorded before a destroy ends anything: gc finishes one that was interrupted


SPAWNING = ColonyState.SPAWNING
PROVISIONING = ColonyState.PROVISIONING
BUILDING = ColonyState.BUILDING
STARTING = ColonyState.STARTING
RUNNING = ColonyState.RUNNING
STOPPING = ColonyState.STOPPING
STOPPED = ColonyState.STOPPED
FAILED = ColonyState.FAILED
DESTROYING = ColonyState.DESTROYING

# A colony in one of these has work in flight; if nobody holds its lock, that work was interrupted (kill -9).
IN_FLIGHT = (SPAWNING, PROVISIONING, BUILDING, STARTING, STOPPING, DESTROYING)
STARTABLE = (STOPPED, FAILED)

# Every state a colony may go to from each state. Any step may fail or be stopped, and gc turns interrupted work
# (or a vanished network) into `stopped`; a destroy is an intent nothing takes back.
_ENDINGS = frozenset({STOPPING, STOPPED, FAILED, DESTROYING})
TRANSITIONS: dict[ColonyState, frozenset[ColonyState]] = {
    SPAWNING: _ENDINGS | {PROVISIONING},
    PROVISIONING: _ENDINGS | {BUILDING},
    BUILDING: _ENDINGS | {STARTING},
    STARTING: _ENDINGS | {RUNNING},
    RUNNING: _ENDINGS,
    STOPPING: _ENDINGS,  # stopping again: a stop that was interrupted
    STOPPED: frozenset({PROVISIONING, FAILED, DESTROYING}),
    FAILED: _ENDINGS | {PROVISIONING},
    DESTROYING: frozenset({DESTROYING}),  # a destroy that was interrupted, tried again
}


def allowed(old: str, new: str) -> bool:
    """Whether a colony in state `old` may go to state `new` (unknown states: never)."""
    try:
        return ColonyState(new) in TRANSITIONS[ColonyState(old)]
    except ValueError:
        return False
