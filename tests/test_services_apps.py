"""Services as a user's colony.toml runs them, through the real `stem`: what real programs do at a stop (a node
server's threads ending after its main thread, a dev server's reloader child), what they print (terminal sequences),
and how `stem logs -f` and `stem serve` show it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import make_repo, run_stem

pytestmark = pytest.mark.root


def spawn(env: dict[str, str], tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    """A repository holding `files` (colony.toml among them), and colony `name` spawned from it."""
    repo = make_repo(tmp_path / f"{name}-repo", files=1)
    for path, text in files.items():
        (repo / path).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "app"], cwd=repo, check=True
    )
    result = run_stem(env, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    return repo


def log_of(env: dict[str, str], name: str) -> list[str]:
    """The colony's log as `stem logs` prints it to a pipe, without the time stamps."""
    result = run_stem(env, "logs", name, "-n", "1000")
    assert result.returncode == 0, result.stderr
    return [line.split(" ", 1)[1] for line in result.stdout.splitlines()]


# A server whose main thread ends on SIGTERM while another thread of it finishes the work in hand: what a node server
# does for a moment on its way out (its worker threads end after the main one), held here for half a second. Meanwhile
# /proc reads the process as a zombie, yet it runs.
FINISHING = """\
import ctypes, os, signal, threading, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("serving", flush=True)
signal.sigwait({signal.SIGTERM})
def finish():
    time.sleep(0.5)
    print("finished the work in hand", flush=True)
    os._exit(0)
threading.Thread(target=finish).start()
ctypes.CDLL(None).pthread_exit(None)
"""
# Its launcher (npm) ends a moment after it on the same SIGTERM, once its main thread has ended.
LAUNCHER = """\
python3 finishing.py &
trap 'sleep 0.2; exit 0' TERM
wait
"""


def test_a_process_finishing_its_threads_at_a_stop_is_waited_for_not_killed_as_one_that_left_its_group(
    hive_env, tmp_path
):
    """`npx http-server` (npm -> sh -> node) stopped: npm and sh end at once, node's main thread too, and its other
    threads a moment later. The stop took node for gone (/proc calls its main thread a zombie), found it in the
    service's cgroup after ending the group and SIGKILLed it there, saying `1 process it started outside its process
    group (setsid, a double fork) still ran: killed (SIGKILL)`, which it never did (1 stop in 7 of a real
    http-server). Now it is waited for as the rest of the group is, and finishes."""
    toml = '[services.web]\ncommand = "sh launch.sh"\n'
    spawn(hive_env.env, tmp_path, "node", {"colony.toml": toml, "launch.sh": LAUNCHER, "finishing.py": FINISHING})
    wait_until_logged(hive_env.env, "node", "[web] serving")
    assert run_stem(hive_env.env, "stop", "node").returncode == 0
    said = log_of(hive_env.env, "node")
    assert "[web] finished the work in hand" in said, said
    assert not [line for line in said if line.startswith("[web!]")], said
    assert said[-1] == "[web] stopped: exited with 0", said


def wait_until_logged(env: dict[str, str], name: str, line: str, timeout: float = 10.0) -> None:
    from helpers import wait_for

    wait_for(lambda: line in log_of(env, name), timeout, f"{line!r} in {name}'s log")
