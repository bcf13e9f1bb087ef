"""`stem logs`: setup and build output kept on disk, filtered by source, followed live."""

from __future__ import annotations

import queue
import subprocess
import threading

import pytest
from helpers import make_repo, run_stem, stem_cmd

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
