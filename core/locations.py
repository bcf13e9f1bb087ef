"""Where Stem keeps its state: STEM_HOME (registry, colony folders, worktrees, locks) and the config file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.home import home_text


def stem_home() -> Path:
    """`STEM_HOME`, else `$XDG_DATA_HOME/stem`, else ~/.local/share/stem."""
    return Path(home_text())


class HiveLayout:
    """The paths inside one STEM_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.registry = home / "hive.db"
        self.colonies = home / "colonies"
        self.worktrees = home / "worktrees"
        self.locks = home / "locks"

    def ensure(self) -> None:
        for path in (self.home, self.colonies, self.worktrees, self.locks):
            path.mkdir(parents=True, exist_ok=True)

    def colony_dir(self, name: str) -> Path:
        return self.colonies / name

    def colony_db(self, name: str) -> Path:
        """In a folder of its own: the colony writes it (and SQLite its -wal and -shm beside it), never the
        colony folder, which holds its host's files."""
        return self.colonies / name / "data" / "colony.db"

    def colony_home(self, name: str) -> Path:
        """HOME for the colony's processes, instead of the user's."""
        return self.colonies / name / "home"

    def colony_policy(self, name: str) -> Path:
        """The last colony.toml that held for the colony (core.config.colony_config_for), outside its view."""
        return self.colonies / name / "policy.toml"

    def colony_log(self, name: str) -> Path:
        return self.colonies / name / "colony.log"

    def worktree(self, name: str) -> Path:
        return self.worktrees / name

    def colony_lock(self, name: str) -> Path:
        return self.locks / f"colony-{name}.lock"


def write_atomically(path: Path, data: str | bytes, mode: int | None = None, durable: bool = True) -> None:
    """Replace `path` with `data`: a crash mid-write leaves the old file or the new one, never half of each, and no
    temporary file behind. `mode`: the new file's (it never has wider permissions meanwhile); None keeps the old
    file's, 0644 for a new one. Its folder must exist (a colony's that was removed is not made again). `durable`:
    on disk before it replaces the old one (fsync); not for what each start writes anew (a spawn's path)."""
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600 until it is complete
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
