"""One blocking computation shared by the callers that ask for it at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Coalesced"]


class Coalesced(Generic[T]):
    """Calls of `run`, coalesced: callers that arrive while a run goes on wait for it, and the one run that follows
    (it starts after they all asked, so it sees whatever they did before asking) serves them all. A burst of N
    calls costs two runs, not N. Each caller gets the result, or the exception, of the run that served it."""

    def __init__(self, run: Callable[[], T]) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._asked = self._served = 0
        self._running = False
        self._outcome: T | BaseException | None = None

    def __call__(self) -> T:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._running:
                self._cond.wait()
            if self._served >= ticket:
                return self._result()
            self._running = True
            covers = self._asked  # everyone who asked so far asked before this run starts
        outcome: T | BaseException
        try:
            outcome = self._run()
            return outcome
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            with self._cond:
                self._running = False
                self._served, self._outcome = covers, outcome
                self._cond.notify_all()

    def _result(self) -> T:
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]
