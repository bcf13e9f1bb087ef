"""`stem logs`: setup and build output kept on disk, filtered by source, followed live."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import threading

import pytest
from helpers import make_repo, run_stem, stem_cmd

from core.events import LogLine
from core.hive import Hive

pytestmark = pytest.mark.root

TOML = '[colony]\nsetup = ["echo hello from setup"]\nbuild = ["echo built; echo warned >&2"]\n'


class LineReader:
    """Lines from a child's stdout via a thread, so a test waits with a timeout and never blocks forever."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None


def test_logs_show_setup_and_build_output_by_source_and_follow(hive_env, tmp_path):
    repo = make_repo(tmp_path / "logrepo", colony_toml=TOML)
    assert run_stem(hive_env.env, "spawn", "loud", "--repo", str(repo)).returncode == 0
    lines = run_stem(hive_env.env, "logs", "loud").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "[network] egress: nat (everything, through the host); no host ports",
        "[setup] $ echo hello from setup",
        "[setup] hello from setup",
        "[build] $ echo built; echo warned >&2",
        "[build] built",
        "[build] warned",
    ]
    only = run_stem(hive_env.env, "logs", "loud", "--service", "build", "-n", "2").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in only] == ["[build] built", "[build] warned"]

    follower = subprocess.Popen(
        [*stem_cmd(), "logs", "loud", "-f", "-n", "1"],
        env=hive_env.env,
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    reader = LineReader(follower)
    try:
        assert reader.next(10).endswith("[build] warned")
        # A restart runs the build again; the follower sees its lines as they are written.
        assert run_stem(hive_env.env, "stop", "loud").returncode == 0
        assert run_stem(hive_env.env, "start", "loud").returncode == 0
        assert reader.next(10).endswith("[network] egress: nat (everything, through the host); no host ports")
        assert reader.next(10).endswith("[build] $ echo built; echo warned >&2")
        assert reader.next(10).endswith("[build] built")
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_logs_of_unknown_colony_is_an_error(hive_env):
    result = run_stem(hive_env.env, "logs", "nobody")
    assert result.returncode == 2
    assert result.stderr.strip() == "stem: no colony named 'nobody' in this hive (see `stem ls`)"


def test_the_hosts_log_lines_are_numbered_after_the_spawns_own(hive_env, tmp_path):
    """A spawn writes the colony's making (network, setup, build) to its log while the host it launched waits; the
    host numbers its own lines (a service's output) after those, so a UI, which drops log lines it has seen by
    their number, shows them too."""
    toml = TOML + '\n[services.talk]\ncommand = "echo the service says hi; exec sleep 1000"\n'
    repo = make_repo(tmp_path / "numbered", colony_toml=toml)

    async def scenario() -> list[LogLine]:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        seen: list[LogLine] = []
        try:
            await hive.attach()
            await hive.spawn("first", make_repo(tmp_path / "first"))  # the hive's host forker runs from here on
            await hive.spawn("num", repo)
            while not any("the service says hi" in line.text for line in seen):
                event = await asyncio.wait_for(events.get(), 10)
                if isinstance(event, LogLine) and event.colony == "num":
                    seen.append(event)
            return seen
        finally:
            await hive.close()

    seen = asyncio.run(scenario())
    making = [line.seq for line in seen if line.source in ("network", "setup", "build")]
    said = next(line for line in seen if "the service says hi" in line.text)
    assert making and said.seq > max(making), [(line.seq, line.source, line.text) for line in seen]
