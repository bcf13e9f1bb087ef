"""core.coalesce.Coalesced: callers that ask during a run are served by the one run after it."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_for

from core.coalesce import Coalesced


def test_a_burst_of_callers_costs_two_runs_and_each_gets_a_run_that_started_after_it_asked():
    started = threading.Event()
    release = threading.Event()
    runs: list[int] = []

    def run() -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            started.set()
            assert release.wait(10)
        return len(runs)

    shared = Coalesced(run)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(shared()))
    first.start()
    assert started.wait(10)
    later = [threading.Thread(target=lambda: results.append(shared())) for _ in range(8)]
    for t in later:
        t.start()
    # All eight have asked (and wait) before the first run ends: only then is the count of runs determined.
    wait_for(lambda: shared._asked == 9, timeout=10, what="the eight callers to ask")
    release.set()
    for t in [first, *later]:
        t.join(10)
    assert runs == [1, 2]  # the run under way, then one for all who asked meanwhile
    assert sorted(results) == [1] + [2] * 8


def test_the_callers_a_failed_run_served_get_its_exception():
    def run() -> int:
        raise OSError("no /proc")

    with pytest.raises(OSError, match="no /proc"):
        Coalesced(run)()
