"""Words for counts in what Stem says: "1 file", "3 files"."""

from __future__ import annotations


def plural(n: int, what: str) -> str:
    """`n` and `what`, with an s unless `n` is one: "1 file", "0 files", "2 commits"."""
    return f"{n} {what}" + ("" if n == 1 else "s")
