"""Where the hive's warm UI process lives, and how the core ends it (the process itself is `stem/warm.py`).

The warm UI process has imported the whole UI once; every `stem` started on a terminal asks it for a UI forked from
that state, which draws its first frame in a fraction of a cold start's time. Like the host forker it is an
optimisation that nothing depends on, and like every process Stem makes it does not outlive the hive's colonies:
it exits by itself once no UI of its own and no colony host has run for a while, and a stop that ends the hive's last
colony host, or gc, ends it at once (a UI it started runs on until its user quits it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.host.paths import HostPaths, ServerPaths


@dataclass(frozen=True, slots=True)
class WarmPaths(ServerPaths):
    NAME: ClassVar[str] = "warm"

    @classmethod
    def of(cls, home: Path) -> WarmPaths:
        return cls(home / "ui")


def hosts_running(home: Path) -> bool:
    """Whether any colony host of the hive at `home` runs: one lock test per colony folder, no registry read."""
    try:
        folders = list((home / "colonies").iterdir())
    except OSError:
        return False
    return any(HostPaths(folder).running() for folder in folders)


def stop(home: Path) -> bool:
    """Have the hive's warm UI process stop taking requests and exit (once the UIs it started have ended; they run
    on). True if one ran."""
    found = WarmPaths.of(home).started_process()
    if found is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(found[0], signal.SIGTERM)
    return True
