"""Services as a user's colony.toml runs them, through the real `stem`: what real programs do at a stop (a node
server's threads ending after its main thread, a dev server's reloader child), what they print (terminal sequences),
and how `stem logs -f` and `stem serve` show it."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import make_repo, run_stem, stem_cmd, stem_popen, until, wait_for
from test_logs import LineReader
from test_services import Colony, run

from core.errors import StepFailed
from core.events import ServiceState
from core.hive import Hive

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
    wait_for(lambda: line in log_of(env, name), timeout, f"{line!r} in {name}'s log")


class Pty:
    """A command's stdout and stderr on a terminal of their own, read in a thread: what a user watching it sees."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*stem_cmd(), *args], env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.data = bytearray()

        def read() -> None:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.data += chunk
            os.close(master)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for(self, text: bytes, timeout: float = 15.0) -> None:
        wait_for(lambda: text in self.data, timeout, f"{text!r} on the terminal (it shows {bytes(self.data)[-400:]!r})")

    def end(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


# A dev server's screen handling in its output: a colour, and a clear-screen with the cursor sent home (vite and
# webpack clear the screen on a restart), a window title (OSC), an erase-line before a progress line.
# Again every 0.2 s, as a dev server does on every rebuild: `stem serve` shows a colony's lines from when it links to
# its host, which may be after the first ones.
SCREEN_SEQUENCES = r"""
import sys, time
while True:
    sys.stdout.write("\x1b[2J\x1b[H\x1b]0;dev server\x07\x1b[32mready\x1b[0m in 12 ms\n\x1b[2K\x1b[1Gbuilt\n")
    sys.stdout.flush()
    time.sleep(0.2)
"""


def test_stem_serve_on_a_terminal_keeps_colours_but_not_a_services_screen_sequences(hive_env, tmp_path):
    """`stem serve` printed every service line as it came, control sequences and all: a dev server's clear-screen
    cleared the terminal of whoever watched the hive (`stem logs` had stopped that already). On a terminal, its
    lines keep their colours (SGR) and lose the rest, as `stem logs` shows them."""
    serve = Pty(hive_env.env, "serve")
    try:
        serve.wait_for(b"stem serve: watching")
        spawn(hive_env.env, tmp_path, "vivid", {"colony.toml": CLEARS_TOML, "dev.py": SCREEN_SEQUENCES})
        serve.wait_for(b"built")
    finally:
        serve.end()
    shown = bytes(serve.data)
    assert b"vivid [web] \x1b[32mready\x1b[0m in 12 ms\r\n" in shown, shown
    assert b"vivid [web] built\r\n" in shown, shown
    for sequence in (b"\x1b[2J", b"\x1b[H", b"\x1b]0;", b"\x07", b"\x1b[2K", b"\x1b[1G"):
        assert sequence not in shown, (sequence, shown)


CLEARS_TOML = '[services.web]\ncommand = "python3 dev.py"\n'


TICKING = """\
import time
while True:
    print("tick", flush=True)
    time.sleep(0.1)
"""


def test_stem_logs_follow_ends_when_its_colony_is_destroyed_after_showing_its_stop(hive_env, tmp_path):
    """`stem logs -f` of a colony destroyed meanwhile (from another shell, the UI) waited for ever and said nothing,
    like `tail -f` of a deleted file. It shows what the stop wrote, says the colony was destroyed and exits 0."""
    spawn(
        hive_env.env,
        tmp_path,
        "brief",
        {"colony.toml": '[services.web]\ncommand = "python3 tick.py"\n', "tick.py": TICKING},
    )
    follower = stem_popen(hive_env.env, "logs", "brief", "-f", "-n", "0", "-s", "web")
    try:
        reader = LineReader(follower)
        assert reader.next(10).endswith(" [web] tick")  # -n 0: a line it follows
        assert run_stem(hive_env.env, "destroy", "--force", "brief").returncode == 0
        lines = [reader.next(10).split(" ", 1)[1]]
        while lines[-1] == "[web] tick":
            lines.append(reader.next(10).split(" ", 1)[1])
        assert lines[-1] == "[web] stopped: killed by SIGTERM", lines
        assert follower.wait(timeout=10) == 0
        assert follower.stderr is not None
        err = follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert err == "stem: brief was destroyed\n"


# A dev server that fails at its start as one run by hand on a terminal does: in colour, after clearing the screen and
# setting the window's title.
FAILS_IN_COLOUR = r"""
import sys
sys.stdout.write("\x1b[2J\x1b[H\x1b]0;vite\x07\x1b[31merror\x1b[0m: Cannot find module 'vite'\n\x1b[2K\x1b[1Gboom\n")
sys.exit(1)
"""


def test_a_start_that_fails_quotes_the_services_last_lines_as_plain_text(hive_env, tmp_path):
    """The failure line of a spawn whose service failed before it was ready quoted the service's last lines with
    their terminal sequences: printed on a terminal, the service's clear-screen wiped the screen it was printed on
    (and stem ls --json and the UI's notice carried them). The colony's log keeps them; the line is plain text."""
    repo = make_repo(tmp_path / "repo", files=1)
    (repo / "colony.toml").write_text('[services.web]\ncommand = "python3 fail.py"\nport = 3000\nrestart = "no"\n')
    (repo / "fail.py").write_text(FAILS_IN_COLOUR)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "x"], cwd=repo)
    result = run_stem(hive_env.env, "spawn", "red", "--repo", str(repo))
    assert result.returncode != 0
    assert result.stderr == (
        "stem: spawn red failed while starting: service web exited with 1 before it was ready: error: Cannot find "
        "module 'vite' | boom (everything made was removed)\n"
    ), result.stderr


def test_a_crashed_services_state_quotes_its_last_lines_as_plain_text(hive_env, tmp_path):
    """The state of a service that crashed (the UI's notice, its Info tab) quotes its last lines: as plain text, not
    with the colours and screen sequences its log keeps."""
    repo = make_repo(tmp_path / "repo", files=1)
    (repo / "fail.py").write_text(FAILS_IN_COLOUR)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "x"], cwd=repo)

    async def scenario(hive: Hive) -> None:
        await hive.spawn("red", repo)
        colony = Colony(hive, "red", '[services.web]\ncommand = "python3 fail.py"\nrestart = "no"\n')
        await colony.services.start_all()
        web = colony.services.services["web"]
        await until(lambda: web.finished, what="web to crash")
        crashed = [e for e in colony.events if isinstance(e, ServiceState) and e.state == "crashed"]
        assert [e.detail for e in crashed] == ["error: Cannot find module 'vite'\nboom\nexited with 1"]
        said = [e.text for e in hive.log("red").after(0) if e.source == "web"]
        assert said[0] == "\x1b[2J\x1b[H\x1b]0;vite\x07\x1b[31merror\x1b[0m: Cannot find module 'vite'", said

    run(hive_env, scenario)


# A dev server that takes the next port when its own is taken, as vite does without --strictPort.
NEXT_PORT = """\
import socket, time
sock = socket.socket()
try:
    sock.bind(("0.0.0.0", 3000))
except OSError:
    print("Port 3000 is in use, trying another one...", flush=True)
    sock.bind(("0.0.0.0", 3002))
sock.listen()
print("Local: http://localhost:%d/" % sock.getsockname()[1], flush=True)
time.sleep(1000)
"""

# What holds port 3000 in its place: a service listening on another's port besides its own (its readiness, on 3001,
# says it holds both), as an agent's dev server started by hand would.
SQUATTER = """\
import socket, time
socks = [socket.create_server(("0.0.0.0", port)) for port in (3000, 3001)]
time.sleep(1000)
"""


def test_a_service_whose_port_another_process_answers_is_not_ready(hive_env, tmp_path):
    """A dev server whose port was taken in the colony (an agent's own `npm run dev`, another service) went on on
    the next port, as vite does, and the readiness check, answered on its port by the other process, called it
    ready: stem ls said ready, its preview URL led to the other one. A service is ready once a process of its own
    listens on its port; the log says who answers there meanwhile, and the failure names it."""
    toml = """
[services.squatter]
command = "python3 squatter.py"
port = 3001
preview = false

[services.web]
command = "python3 next_port.py"
port = 3000
ready_timeout = 1.5
depends_on = ["squatter"]
"""
    repo = make_repo(tmp_path / "repo", files=1)
    for name, text in (("colony.toml", toml), ("next_port.py", NEXT_PORT), ("squatter.py", SQUATTER)):
        (repo / name).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "x"], cwd=repo)
    result = run_stem(hive_env.env, "spawn", "taken", "--repo", str(repo))
    assert result.returncode != 0, result.stdout
    held = r"service squatter \(pid \d+ in the colony: python3 squatter\.py\)"
    assert re.match(
        rf"stem: spawn taken failed while starting: service web not ready after 1\.5s \(port 3000 is taken by "
        rf"{held}, not by web\): Port 3000 is in use, trying another one\.\.\. \| Local: http://localhost:3002/",
        result.stderr,
    ), result.stderr


# What a service may write besides text: a NUL (a binary blob, a C string written whole), bytes that are not UTF-8
# (latin-1), and a line longer than a log line may be.
NOT_TEXT = r"""
import sys, time
out = sys.stdout.buffer
out.write(b"blob: \x00\x01\x02 end\nlatin-1: caf\xe9\n" + b"A" * 40000 + b"\nlast line\n")
out.flush()
time.sleep(1000)
"""


def test_a_services_binary_output_leaves_its_log_text_that_grep_reads(hive_env, tmp_path):
    """A service that wrote one NUL made its log binary to grep: `stem logs NAME | grep ...` printed only 'binary
    file matches' (and so did grep on colony.log) for as long as the line stayed in the log. A NUL is logged as
    U+FFFD, as bytes that are not UTF-8 are; a huge line is cut into pieces; the lines around them are intact."""
    spawn(
        hive_env.env,
        tmp_path,
        "blob",
        {"colony.toml": '[services.web]\ncommand = "python3 bin.py"\n', "bin.py": NOT_TEXT},
    )
    wait_until_logged(hive_env.env, "blob", "[web] last line")
    shown = run_stem(hive_env.env, "logs", "blob", "-s", "web")
    assert "\0" not in shown.stdout
    grep = subprocess.run(["grep", "end"], input=shown.stdout, capture_output=True, text=True)
    assert grep.stdout.endswith(" [web] blob: \ufffd\x01\x02 end\n"), grep.stdout
    said = [line for line in log_of(hive_env.env, "blob") if line.startswith("[web]")]
    assert said[:2] == ["[web] blob: \ufffd\x01\x02 end", "[web] latin-1: caf\ufffd"], said
    assert [len(line) for line in said[2:-1]] == [6 + 16384, 6 + 16384, 6 + 40000 - 2 * 16384], said
    assert said[-1] == "[web] last line"


# A server that serves until the end of its input, as `esbuild --serve` and `esbuild --watch` do: "[serve] stopped
# automatically because stdin was closed (keep stdin open to continue serving)".
UNTIL_STDIN_ENDS = """\
import http.server, sys, threading
server = http.server.ThreadingHTTPServer(("0.0.0.0", 3000), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("serving on 3000", flush=True)
sys.stdin.read()
print("[serve] stopped automatically because stdin was closed", flush=True)
"""


def test_a_server_that_serves_until_its_stdin_ends_keeps_serving(hive_env, tmp_path):
    """A service's stdin was /dev/null, so `esbuild --serve` (and --watch) read the end of its
    input at once and stopped, exiting 0 before it was ready: its start failed with esbuild's 'keep stdin open to
    continue serving', which colony.toml has no way to do. Its stdin is now a pipe nobody writes to, as a terminal
    nobody types in, open while it runs."""
    toml = '[services.web]\ncommand = "python3 serve.py"\nport = 3000\nready = "http:/"\n'
    spawn(hive_env.env, tmp_path, "bundler", {"colony.toml": toml, "serve.py": UNTIL_STDIN_ENDS})
    listed = run_stem(hive_env.env, "ls")
    assert " web:ready " in listed.stdout, listed.stdout
    assert run_stem(hive_env.env, "stop", "bundler").returncode == 0
    said = [line for line in log_of(hive_env.env, "bundler") if line.startswith("[web")]
    assert said[0] == "[web] serving on 3000", said
    assert said[-1] == "[web] stopped: killed by SIGTERM", said
    assert "[web] [serve] stopped automatically because stdin was closed" not in said


def test_a_colony_host_started_again_lists_only_the_services_it_runs(hive_env, tmp_path):
    """A host killed (kill -9, or a stop that outlasted its stopper's patience) leaves its last service states in the
    registry. The next host wrote its own over them but never cleared the rest: a service taken out of colony.toml
    meanwhile stayed in `stem ls` as it last was, 'ready', with no process behind it."""
    toml = '[services.old]\ncommand = "python3 -m http.server 3000"\nport = 3000\n'
    spawn(hive_env.env, tmp_path, "again", {"colony.toml": toml})
    (host,) = hive_env.host_pids()
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: not hive_env.host_pids(), 10, "the host to die")
    worktree = hive_env.home / "worktrees" / "again"
    (worktree / "colony.toml").write_text('[services.fresh]\ncommand = "python3 -m http.server 3001"\nport = 3001\n')

    def services() -> dict[str, str]:
        listed = run_stem(hive_env.env, "ls", "--json")  # revives the colony's host, as any command does
        assert listed.returncode == 0, listed.stderr
        (colony,) = json.loads(listed.stdout)
        found: dict[str, str] = colony["services"]
        return found

    wait_for(lambda: services().get("fresh") == "ready", 20, "the new host to run fresh")
    assert services() == {"fresh": "ready"}


# One line of 180,000 bytes in characters of three bytes each (a minified JSON of Chinese text), then a short one.
LONG_CJK = """\
import sys, time
sys.stdout.write("日本語" * 20000 + "\\nend\\n")
sys.stdout.flush()
time.sleep(1000)
"""


def test_a_line_logged_in_pieces_keeps_every_character(hive_env, tmp_path):
    """A line longer than 16 KiB is logged in pieces, cut every 16,384 bytes: through a character of more than one
    byte, which came out as two U+FFFD, one at the end of a piece and one at the start of the next (two in three
    cuts of CJK text). Each piece now ends where a character does."""
    spawn(
        hive_env.env,
        tmp_path,
        "wide",
        {"colony.toml": '[services.web]\ncommand = "python3 cjk.py"\n', "cjk.py": LONG_CJK},
    )
    wait_until_logged(hive_env.env, "wide", "[web] end")
    pieces = [line.removeprefix("[web] ") for line in log_of(hive_env.env, "wide") if line.startswith("[web] ")][:-1]
    assert [len(piece.encode()) for piece in pieces] == [16383] * 10 + [16170]
    assert "".join(pieces) == "日本語" * 20000


# The same two on the colony's loopback only, as dev servers listen by default (vite, `flask run`).
NEXT_LOOPBACK_PORT = NEXT_PORT.replace('"0.0.0.0"', '"127.0.0.1"')
LOOPBACK_SQUATTER = SQUATTER.replace(
    '("0.0.0.0", port)) for port in (3000, 3001)',
    '(where, port)) for where, port in (("127.0.0.1", 3000), ("0.0.0.0", 3001))',
)


def test_another_processs_loopback_listener_on_a_services_port_is_not_forwarded_as_the_services(hive_env, tmp_path):
    """A service whose port another process of the colony held on the loopback (a dev server the agent started by
    hand) had that one's port forwarded from the colony's address as its own: the log said '[network] web listens on
    127.0.0.1:3000 only ...: 10.x.x.x:3000 is forwarded to it', and the colony's address led to the other server.
    Only the service's own listener is forwarded; the log says who holds the port."""
    assert "127.0.0.1" in NEXT_LOOPBACK_PORT and '("127.0.0.1", 3000)' in LOOPBACK_SQUATTER
    repo = make_repo(tmp_path / "repo", files=1)
    (repo / "next_port.py").write_text(NEXT_LOOPBACK_PORT)
    (repo / "squatter.py").write_text(LOOPBACK_SQUATTER)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "x"], cwd=repo)
    toml = """
[services.squatter]
command = "python3 squatter.py"
port = 3001

[services.web]
command = "python3 next_port.py"
port = 3000
ready_timeout = 1
restart = "no"
depends_on = ["squatter"]
"""

    async def scenario(hive: Hive) -> None:
        await hive.spawn("loop", repo)
        colony = Colony(hive, "loop", toml)
        with pytest.raises(StepFailed) as failed:
            await colony.services.start_all()
        assert re.match(
            r"service web not ready after 1s \(port 3000 is taken by service squatter \(pid \d+", str(failed.value)
        )
        said = [(e.source, e.text) for e in hive.log("loop").after(0)]
        assert not [text for source, text in said if "is forwarded to it" in text], said
        taken = [text for source, text in said if source == "web!"]
        assert len(taken) == 1 and taken[0].startswith("port 3000 is taken by service squatter ("), said

    run(hive_env, scenario)


POLITE = """\
import signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("up", flush=True)
while True:
    time.sleep(1)
"""


def test_a_stopped_service_is_let_go_on_to_end_at_a_stop(hive_env, tmp_path):
    """A service that was stopped (kill -STOP, SIGTSTP, a debugger that left it so) took its SIGTERM only once it
    ran again, so a stop SIGKILLed it after its stop_timeout ('still running 3s after SIGTERM: killed (SIGKILL)')
    rather than letting it end as it does. SIGCONT follows the stop signal, as systemd sends it."""
    toml = '[services.polite]\ncommand = "python3 polite.py"\nstop_timeout = 3\n'
    spawn(hive_env.env, tmp_path, "paused", {"colony.toml": toml, "polite.py": POLITE})
    wait_until_logged(hive_env.env, "paused", "[polite] up")
    (colony,) = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    pid = colony["service_pids"]["polite"]
    os.kill(pid, signal.SIGSTOP)
    stat = Path(f"/proc/{pid}/stat")
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 5, "the service to be stopped")
    assert run_stem(hive_env.env, "stop", "paused").returncode == 0
    said = [line for line in log_of(hive_env.env, "paused") if line.startswith("[polite")]
    assert said[-2:] == ["[polite] bye", "[polite] stopped: exited with 0"], said


def test_a_service_named_as_stems_own_log_lines_is_refused(hive_env, tmp_path):
    """A service called build (a `vite build --watch` watcher), network, config, ...: its lines went into the colony's
    log under the name of Stem's own, among the build step's output (`stem logs -s build` showed both, and its
    '[build!] exited with 1' read as the build failing). colony.toml refuses the name, naming the line."""
    repo = make_repo(tmp_path / "repo", files=1)
    (repo / "colony.toml").write_text('[colony]\nbuild = ["true"]\n\n[services.build]\ncommand = "sleep 1000"\n')
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "x"], cwd=repo)
    result = run_stem(hive_env.env, "spawn", "named", "--repo", str(repo))
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line, line
    assert "colony.toml:4: [services] build: Stem writes its own lines to the colony's log under 'build'" in line
    assert "give the service another name (build-dev, say)" in line
    assert run_stem(hive_env.env, "ls").stdout.startswith("no colonies yet")
