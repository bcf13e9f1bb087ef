"""`stem logs`: setup and build output kept on disk, filtered by source, followed live."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import assert_refused, git, make_repo, netns_names, run_stem, stem_cmd, wait_for

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


@contextlib.contextmanager
def following(hive_env, colony: str, *args: str) -> Iterator[LineReader]:
    """`stem logs COLONY -f ARGS` running, its lines read as they come; stopped when the block ends."""
    follower = subprocess.Popen(
        [*stem_cmd(), "logs", colony, "-f", *args],
        env=hive_env.env,
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield LineReader(follower)
    finally:
        follower.terminate()
        follower.wait(timeout=10)


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

    with following(hive_env, "loud", "-n", "1") as reader:
        assert reader.next(10).endswith("[build] warned")
        # A restart runs the build again; the follower sees its lines as they are written.
        assert run_stem(hive_env.env, "stop", "loud").returncode == 0
        assert run_stem(hive_env.env, "start", "loud").returncode == 0
        assert reader.next(10).endswith("[network] egress: nat (everything, through the host); no host ports")
        assert reader.next(10).endswith("[build] $ echo built; echo warned >&2")
        assert reader.next(10).endswith("[build] built")


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


def test_a_full_disk_keeps_a_colony_running_and_its_log_in_memory_until_there_is_room(hive_env, tmp_path):
    """The disk under STEM_HOME fills while a colony runs: its service runs on and its lines still reach every client
    (from memory), each client is told once that the file is not written, and is told again once there is room,
    when the file takes lines again."""
    from core.events import Notice

    toml = '[services.talk]\ncommand = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"\n'
    repo = make_repo(tmp_path / "fullrepo", colony_toml=toml)
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(hive_env.home)], check=True)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()

        async def next_of(kind: type, containing: str) -> LogLine | Notice:
            async def find() -> LogLine | Notice:
                while True:
                    event = await events.get()
                    text = event.text if isinstance(event, LogLine) else getattr(event, "message", "")
                    if isinstance(event, kind) and containing in text:
                        return event

            return await asyncio.wait_for(find(), timeout=15)

        try:
            await hive.attach()
            rec = await hive.spawn("full", repo)
            await next_of(LogLine, "tick")
            filler = hive_env.home / "filler"
            with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            told = await next_of(Notice, "its log file cannot be written")
            assert "No space left" in told.message and told.level == "error"
            after = await next_of(LogLine, "tick")  # still said, and still reaching this client
            assert hive.services("full")["talk"].state == "ready"
            filler.unlink()
            await next_of(Notice, "its log file is written again")
            written = await next_of(LogLine, "tick")
            log_file = hive_env.home / "colonies" / "full" / "colony.log"
            assert f"tick {written.text.split()[-1]}" in log_file.read_text()
            assert written.seq > after.seq
            await hive.destroy(rec.name, force=True)
        finally:
            await hive.close()

    try:
        asyncio.run(scenario())
    finally:
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_a_colony_that_filled_the_disk_with_its_log_can_be_destroyed(hive_env, tmp_path):
    """A service's output filled the disk under STEM_HOME (its log and whatever else is there): the registry cannot
    take destroy's first write, so destroy empties the colony's own log files (they go with it) and goes on. The
    colony is gone, nothing of it is left, and the hive works again."""
    toml = (
        '[services.chatty]\ncommand = "for i in $(seq 3000); do echo line $i of what the service had to say; done;'
        ' exec sleep 1000"\n'
    )
    repo = make_repo(tmp_path / "chattyrepo", colony_toml=toml)
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(hive_env.home)], check=True)
    try:
        env = hive_env.env
        assert run_stem(env, "spawn", "chatty", "--repo", str(repo)).returncode == 0
        log_file = hive_env.home / "colonies" / "chatty" / "colony.log"
        wait_for(lambda: "line 3000 of" in log_file.read_text(), timeout=15, what="the service's lines in its log")
        with (hive_env.home / "filler").open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        ls = run_stem(env, "ls")
        assert ls.returncode == 0 and "chatty" in ls.stdout  # reading needs no room
        destroyed = run_stem(env, "destroy", "--force", "chatty")
        assert destroyed.returncode == 0, destroyed.stderr
        assert "chatty" not in run_stem(env, "ls").stdout
        assert not (hive_env.home / "colonies" / "chatty").exists()
        assert netns_names(hive_env.prefix) == []
        assert run_stem(env, "gc").stdout.strip() == "nothing to clean"
    finally:
        run_stem(hive_env.env, "destroy", "--force", "chatty")
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_on_a_full_disk_stop_and_start_still_work_from_the_registrys_reserve(hive_env, tmp_path):
    """The hive keeps 1 MiB next to hive.db while it has room (8 MiB free: here a 16 MiB disk). The disk fills
    (another program's file, not the colony's): a spawn is refused and leaves the reserve, `stem stop` gives it up
    and is recorded; once there is room again, the next command makes the reserve again."""
    repo = make_repo(tmp_path / "quietrepo")
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(hive_env.home)], check=True)
    reserve = hive_env.home / "hive.db.reserve"
    try:
        env = hive_env.env
        assert run_stem(env, "spawn", "quiet", "--repo", str(repo)).returncode == 0
        assert reserve.stat().st_size == 1 << 20
        filler = hive_env.home / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        # A spawn on the full disk is refused and leaves the reserve to the stop that makes room.
        assert_refused(run_stem(env, "spawn", "more", "--repo", str(repo)), "free some space")
        assert reserve.stat().st_size == 1 << 20
        stopped = run_stem(env, "stop", "quiet")
        assert stopped.returncode == 0, stopped.stderr
        assert reserve.stat().st_size == 0  # given up: the file says the room is owed
        assert "stopped" in run_stem(env, "ls").stdout
        filler.unlink()
        started = run_stem(env, "start", "quiet")
        assert started.returncode == 0, started.stderr
        assert reserve.stat().st_size == 1 << 20
        assert not list(hive_env.home.glob("hive.db.reserve.*"))
    finally:
        run_stem(hive_env.env, "destroy", "--force", "quiet")
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_on_a_full_disk_with_no_colony_running_the_hive_still_opens_to_make_room(hive_env, tmp_path):
    """With no colony running nobody has hive.db open, and opening it needs room for SQLite's shared-memory index:
    on a full disk every command failed ("disk I/O error"), the destroy and gc that would make room too. The
    reserve is given up for that, and the hive opens."""
    repo = make_repo(tmp_path / "quietrepo")
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(hive_env.home)], check=True)
    try:
        env = hive_env.env
        assert run_stem(env, "spawn", "quiet", "--repo", str(repo)).returncode == 0
        assert run_stem(env, "stop", "quiet").returncode == 0
        filler = hive_env.home / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        listed = run_stem(env, "ls")
        assert listed.returncode == 0 and "stopped" in listed.stdout, listed.stderr
        destroyed = run_stem(env, "destroy", "--force", "quiet")
        assert destroyed.returncode == 0, destroyed.stderr
        assert run_stem(env, "gc").returncode == 0
        assert "no colonies" in run_stem(env, "ls").stdout
    finally:
        run_stem(hive_env.env, "destroy", "--force", "quiet")
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_a_ui_takes_new_log_lines_only_from_the_colony_it_shows(hive_env, tmp_path):
    """A colony flooding its log while another is shown cost a UI most of a core decoding lines it never showed:
    the hosts of colonies whose lines are not wanted (`log_lines_for`) send none. Shown, the colony's log comes
    whole (its history from the host) and its new lines follow."""
    toml = "[services.talk]\ncommand = \"sh -c 'i=0; while true; i=$((i+1)); do echo line $i; sleep 0.02; done'\"\n"
    repo = make_repo(tmp_path / "talky", colony_toml=toml)

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        shown = ["one"]
        hive.log_lines_for = lambda colony: colony in shown
        events = hive.subscribe()
        try:
            await hive.attach()
            await hive.spawn("one", repo)
            await hive.spawn("two", repo)

            async def lines_of(colony: str, count: int) -> list[LogLine]:
                seen: list[LogLine] = []
                while len(seen) < count:
                    event = await asyncio.wait_for(events.get(), 10)
                    if isinstance(event, LogLine) and event.colony == colony and event.source == "talk":
                        seen.append(event)
                    if isinstance(event, LogLine) and event.source == "talk":  # the hosts' lines, not the spawns'
                        assert event.colony in shown, event
                return seen

            await lines_of("one", 20)
            # Lines two's host sent before it was told are all this process took of its flood.
            held = len(hive._links["two"].log)  # what the link took from its host
            await lines_of("one", 20)
            assert len(hive._links["two"].log) == held
            shown[:] = ["two"]
            hive.log_lines_changed()
            entries = await hive.log_entries("two")
            talk = [int(e.text.split()[1]) for e in entries if e.source == "talk"]
            assert talk[:3] == [1, 2, 3] and talk == list(range(1, len(talk) + 1)), talk[:5]
            later = await lines_of("two", 10)
            assert int(later[-1].text.split()[1]) > talk[-1]
            one = hive._links["one"].log
            count = len(one)
            await lines_of("two", 10)
            assert len(one) == count  # one is not shown now: its host sends none
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_stem_logs_on_a_terminal_keeps_colours_but_not_a_services_other_sequences():
    """A progress bar's erase-line and cursor-up, a title, a hyperlink, a bell: printed as they were logged they
    erased the lines above them in the user's terminal. Its colours stay (SGR, the colon forms too)."""
    from stem.subcommands import _terminal_safe

    line = (
        "12:00:01 [vite] \x1b[2K\x1b[1G\x1b[32m✓\x1b[0m built\x1b[1A\x1b[2K \x1b]8;;http://x/\x07a link\x1b]8;;\x1b\\"
        " \x1b]0;title\x07\x07\x1b[38:2::1:2:3mtrue\x1b[0m\ttab \x1b(Bdone\x1bM\x08\x1b[3"
    )
    assert _terminal_safe(line) == (
        "12:00:01 [vite] \x1b[32m✓\x1b[0m built a link \x1b[38:2::1:2:3mtrue\x1b[0m\ttab done"
    )


def test_a_flood_from_one_service_leaves_the_others_and_the_setups_lines_in_stem_logs_and_the_ui(hive_env, tmp_path):
    """One service prints 12 MB (the log file's two generations hold 8, its host's ring 5,000 lines); the setup's
    output and a quiet service's URL line are still in `stem logs` and in the log the Logs tab loads."""
    toml = (
        '[colony]\nsetup = ["echo hello from setup"]\n'
        "[services.vite]\ncommand = \"echo '  Local:   http://localhost:5173/'; exec sleep 1000\"\n"
        "[services.noisy]\n"
        "command = \"sleep 0.5; yes 'GET /api/items?page=1 200 in 3ms user=alice agent=curl/8.5 "
        + "x" * 40
        + "' | head -n 110000; echo flood done; exec sleep 1000\"\n"
    )
    repo = make_repo(tmp_path / "floodrepo", colony_toml=toml)

    def lines_of(source: str) -> list[str]:
        out = run_stem(hive_env.env, "logs", "flood", "-s", source, "-n", "10").stdout.splitlines()
        return [line.split("] ", 1)[1] for line in out]

    async def scenario() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.attach()
            await hive.spawn("flood", repo)
            await asyncio.to_thread(wait_for, lambda: lines_of("noisy")[-1:] == ["flood done"], 120, "the flood")
            log_file = hive_env.home / "colonies" / "flood" / "colony.log"
            assert log_file.with_suffix(".log.1").exists()  # it rotated
            assert lines_of("vite") == ["  Local:   http://localhost:5173/"]
            assert lines_of("setup") == ["$ echo hello from setup", "hello from setup"]
            shown = await hive.log_entries("flood")  # what the Logs tab shows
            assert [e.text for e in shown if e.source == "vite"] == ["  Local:   http://localhost:5173/"]
            assert [e.text for e in shown if e.source == "setup"] == ["$ echo hello from setup", "hello from setup"]
            assert shown[-1].text == "flood done" and len([e for e in shown if e.source == "noisy"]) >= 5000
            await hive.destroy("flood", force=True)
        finally:
            await hive.close()

    asyncio.run(scenario())


def test_a_ui_and_stem_logs_that_come_after_the_log_file_stopped_being_written_are_told(hive_env, tmp_path):
    """The disk filled while no UI was open: a UI opened later is told that the colony's log file is not being
    written and why, and so is `stem logs`, which shows that file; both stop saying so once there is room."""
    from core.events import LogsLoaded, Notice

    toml = '[services.talk]\ncommand = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"\n'
    repo = make_repo(tmp_path / "laterrepo", colony_toml=toml)
    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(hive_env.home)], check=True)
    filler = hive_env.home / "filler"

    async def notices_of_a_new_ui() -> list[str]:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        events = hive.subscribe()
        try:
            await hive.attach()
            said = []

            async def until_snapshot() -> None:  # the host's snapshot, and what this UI says of it at once
                while True:
                    event = await events.get()
                    if isinstance(event, Notice):
                        said.append(event.message)
                    if isinstance(event, LogsLoaded) and event.colony == "later":
                        return

            await asyncio.wait_for(until_snapshot(), 10)
            while not events.empty():
                event = events.get_nowait()
                if isinstance(event, Notice):
                    said.append(event.message)
            return said
        finally:
            await hive.close()

    try:
        assert run_stem(hive_env.env, "spawn", "later", "--repo", str(repo)).returncode == 0
        log_file = hive_env.home / "colonies" / "later" / "colony.log"
        wait_for(lambda: "tick" in log_file.read_text(), 15, "the service's lines")
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        told = "later: its log file cannot be written (No space left on device): new lines stay in memory"

        def a_new_ui_is_told() -> bool:
            return any(told in message for message in asyncio.run(notices_of_a_new_ui()))

        wait_for(a_new_ui_is_told, 15, "a new UI told of the log file")
        result = run_stem(hive_env.env, "logs", "later", "-n", "1")
        assert result.returncode == 0 and told in result.stderr, result.stderr

        filler.unlink()
        wait_for(lambda: not a_new_ui_is_told(), 15, "a new UI no longer told, the file written again")
        assert "cannot be written" not in run_stem(hive_env.env, "logs", "later", "-n", "1").stderr
        assert run_stem(hive_env.env, "destroy", "--force", "later").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


def test_a_host_that_died_after_a_broken_colony_toml_edit_comes_back_on_the_last_file_and_its_log_says_why(
    hive_env, tmp_path
):
    """colony.toml is edited into something that does not parse (the running host keeps its services) and then the
    host dies: the restart runs the last file that held (it failed the colony before) and `stem logs` says why, after
    the edit."""
    toml = '[services.web]\ncommand = "echo web up; exec sleep 1000"\n'
    repo = make_repo(tmp_path / "brokenrepo", colony_toml=toml)
    assert run_stem(hive_env.env, "spawn", "broken", "--repo", str(repo)).returncode == 0
    colony = hive_env.home / "colonies" / "broken"
    log_file = colony / "colony.log"
    wait_for(lambda: "[web] web up" in log_file.read_text(), 15, "the service's line")
    (hive_env.home / "worktrees" / "broken" / "colony.toml").write_text("[services.web\ncommand = 'x'\n")
    wait_for(lambda: "[config!] colony.toml not applied" in log_file.read_text(), 15, "the edit seen")
    host = int((colony / "host.pid").read_text().split()[0])
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{host}").exists(), 10, "the host gone")  # its launcher reaps it

    async def revive() -> bool:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            return await hive.revive("broken")
        finally:
            await hive.close()

    assert asyncio.run(revive()) is True
    wait_for(lambda: log_file.read_text().count("[web] web up") == 2, 15, "the service started again")
    log = run_stem(hive_env.env, "logs", "broken").stdout
    died = log.index("[host] its colony host died; restarting the colony")
    why = log.index(
        f"[config!] {hive_env.home}/worktrees/broken/colony.toml:1: invalid TOML: Expected ']' at the end of a table "
        "declaration; started with the last colony.toml that held"
    )
    assert died < why < log.rindex("[web] web up"), log
    assert "the colony failed" not in log
    assert run_stem(hive_env.env, "stop", "broken").returncode == 0


def test_a_colony_host_that_crashes_says_why_in_the_colonys_log(tmp_path):
    """A bug that ends a colony host (here: a registry it cannot read) leaves one line in the colony's log, not
    only a traceback in host.log."""
    from core.procs import python_module

    home = tmp_path / "home"
    (home / "colonies" / "x").mkdir(parents=True)
    (home / "hive.db").write_text("not a database\n")
    result = subprocess.run(
        [*python_module("core.host"), str(home), "x"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    (line,) = (home / "colonies" / "x" / "colony.log").read_text().splitlines()
    assert line.split(" ", 1)[1] == (
        "[host!] the colony host crashed: DatabaseError: file is not a database (host.log has its traceback)"
    )


def test_stem_logs_follow_loses_no_line_written_between_its_tail_and_its_follow(hive_env, tmp_path):
    # A service printing a numbered line every millisecond: `stem logs -f` shows the last lines, then follows. The
    # follow opened the file at its end once the tail had been read and the host asked about its log, so the lines
    # written in between were never shown (8 of them, once in 5 tries, with vite's rebuild output).
    ticker = "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.001)\n"
    repo = make_repo(tmp_path / "ticks", colony_toml='[services.tick]\ncommand = "python3 -u ticker.py"\n')
    (repo / "ticker.py").write_text(ticker)
    git(repo, "add", "ticker.py")
    git(repo, "commit", "-qm", "ticker")
    assert run_stem(hive_env.env, "spawn", "ticks", "--repo", str(repo)).returncode == 0
    wait_for(lambda: len(run_stem(hive_env.env, "logs", "ticks", "-s", "tick", "-n", "5").stdout.splitlines()) == 5)
    for _ in range(5):
        with following(hive_env, "ticks", "-s", "tick", "-n", "3") as reader:
            numbers = [int(reader.next(10).rsplit(" ", 1)[1]) for _ in range(300)]
        assert numbers == list(range(numbers[0], numbers[0] + 300)), numbers
    assert run_stem(hive_env.env, "destroy", "ticks").returncode == 0
