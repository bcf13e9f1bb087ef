"""A colony's log: a bounded ring in memory (readers ask for "everything after seq n") and a size-capped file."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: float
    source: str
    text: str


class ColonyLog:
    """Thread-safe: setup commands and service readers append from worker threads."""

    def __init__(self, path: Path, ring_size: int = 5000, max_bytes: int = 4 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._ring: deque[Entry] = deque(maxlen=ring_size)
        self._seq = 0
        self._lock = threading.Lock()

    def append(self, source: str, text: str) -> Entry:
        with self._lock:
            self._seq += 1
            entry = Entry(self._seq, time.time(), source, text.rstrip("\r\n"))
            self._ring.append(entry)
            self._write(entry)
        return entry

    def _write(self, entry: Entry) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry.at))
        line = f"{stamp} [{entry.source}] {entry.text}\n"
        try:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                # One rotated generation keeps the disk bounded at twice the cap.
                self.path.replace(self.path.with_suffix(".log.1"))
            with self.path.open("a", encoding="utf-8", errors="replace") as f:
                f.write(line)
        except FileNotFoundError:
            pass  # the colony is being destroyed

    def after(self, seq: int) -> list[Entry]:
        with self._lock:
            return [e for e in self._ring if e.seq > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def tail(self, n: int) -> list[Entry]:
        with self._lock:
            return list(self._ring)[-n:]
