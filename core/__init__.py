"""Stem's orchestration core: colonies, their kernel objects, processes and events. Never imports Textual."""

from core.errors import StemError

__all__ = ["StemError"]
