"""A colony's log file: one write per batch of lines, capped with one rotated generation, following a rotation or
removal done by another process, and cheap while the disk is full."""

from __future__ import annotations

import os
import subprocess

import pytest

from core.colony_log import ColonyLog, failure_tail, parse_line, read_tail, recent, trouble_message, trouble_told


def lines_of(path):
    return [line.split("] ", 1)[1] for line in path.read_text().splitlines()]


def test_a_batch_of_lines_is_one_write_in_order_and_numbered(tmp_path, monkeypatch):
    log = ColonyLog(tmp_path / "colony.log")
    first = log.append("web", "listening on 3000\n")
    batch = log.extend("web", [f"GET /{i}" for i in range(500)])
    assert [e.seq for e in batch] == list(range(first.seq + 1, first.seq + 501))
    assert lines_of(log.path) == ["listening on 3000"] + [f"GET /{i}" for i in range(500)]
    assert [e.text for e in log.after(first.seq)][-1] == "GET /499"
    # one look at the path for the whole batch, not an open, stat and close per line
    stats = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    log.extend("web", [f"line {i}" for i in range(1000)])
    monkeypatch.undo()
    assert len(stats) == 1
    log.close()


def test_the_file_is_capped_with_one_rotated_generation(tmp_path):
    log = ColonyLog(tmp_path / "colony.log", max_bytes=4096)
    for i in range(300):
        log.append("svc", f"line {i:04d} " + "x" * 40)
    rotated = tmp_path / "colony.log.1"
    assert log.path.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    kept = read_tail(log.path, 10_000, lambda _line: True)
    assert kept[-1].endswith("line 0299 " + "x" * 40)  # the newest line is in the current file
    numbers = [int(line.split("line ")[1][:4]) for line in kept]
    assert numbers == list(range(numbers[0], 300))  # both generations read back in order, none missing between
    log.close()


def test_a_file_rotated_or_removed_by_another_process_is_followed(tmp_path):
    log = ColonyLog(tmp_path / "colony.log")
    log.append("setup", "before")
    subprocess.run(["mv", str(log.path), str(tmp_path / "elsewhere.log")], check=True)  # logrotate, another stem
    log.append("setup", "after the move")
    assert lines_of(log.path) == ["after the move"]
    assert lines_of(tmp_path / "elsewhere.log") == ["before"]
    log.path.unlink()
    log.append("setup", "after the removal")
    assert lines_of(log.path) == ["after the removal"]
    log.close()


def test_a_removed_colony_folder_is_not_made_again(tmp_path):
    folder = tmp_path / "colonies" / "gone"
    folder.mkdir(parents=True)
    log = ColonyLog(folder / "colony.log")
    log.append("svc", "hello")
    subprocess.run(["rm", "-rf", str(folder)], check=True)  # stem destroy
    entry = log.append("svc", "late line")
    assert entry.text == "late line" and log.tail(1) == [entry]  # still in memory
    assert not folder.exists()
    log.close()


def test_while_the_file_cannot_be_written_it_is_tried_again_once_a_second_not_per_line(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    log = ColonyLog(folder / "colony.log")
    troubles: list[str | None] = []
    log.on_trouble = troubles.append
    opens = []

    def failing_open(path, *args, **kwargs):
        opens.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "open", failing_open)
    for i in range(2000):
        log.append("svc", f"line {i}")
    monkeypatch.undo()
    assert len(opens) == 1  # not 2,000 tries in a burst
    assert troubles == ["No space left on device"]
    assert log.tail(1)[0].text == "line 1999"  # every line is still in the ring
    log._retry_at = 0.0  # the second has passed
    log.append("svc", "room again")
    assert troubles == ["No space left on device", None]
    assert lines_of(log.path) == ["room again"]
    log.close()


def test_a_line_redrawn_with_carriage_returns_is_one_line_as_a_terminal_shows_it(tmp_path):
    """Progress counters redrawn in place (`\\r`): one line in the ring, the file and every reader of the file, as
    its last state would show on a terminal; never a line per state, nor lines without their time and source."""
    log = ColonyLog(tmp_path / "colony.log")
    log.append("web", "downloading \r0%\r5%\r100%\r\n")
    log.append("web", "\rfetched 3 of 3 \rdone")
    log.append("web", "tick 1")
    assert [e.text for e in log.after(0)] == ["100%loading ", "donehed 3 of 3 ", "tick 1"]
    assert lines_of(log.path) == ["100%loading ", "donehed 3 of 3 ", "tick 1"]
    # A log an older Stem wrote, with carriage returns inside its lines: still a line each.
    with log.path.open("ab") as f:
        f.write(b"2026-12-04T10:00:00 [web] old \r50%\r\n")
    assert read_tail(log.path, 10, lambda line: True)[-1] == "2026-12-04T10:00:00 [web] old \r50%\r"
    assert len(read_tail(log.path, 10, lambda line: True)) == 4
    log.close()


def test_a_failure_quotes_the_lines_that_say_what_went_wrong():
    npm = [
        "npm error code EUSAGE",
        "npm error",
        "npm error The `npm ci` command can only install with an existing package-lock.json",
        *[f"npm error   usage line {i}" for i in range(20)],
        "npm notice New major version of npm available!",
        "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log",
    ]
    assert failure_tail(npm) == (
        "npm error code EUSAGE | npm error The `npm ci` command can only install with an existing package-lock.json | "
        "npm error A complete log of this run can be found in: /root/.npm/_logs/x.log"
    )
    traceback = [
        "Traceback (most recent call last):",
        '  File "manage.py", line 3',
        "    import django",
        "ModuleNotFoundError: No module named 'django'",
    ]
    assert (
        failure_tail(traceback) == "Traceback (most recent call last): | ModuleNotFoundError: No module named 'django'"
    )
    assert failure_tail(["building", "", "step 2", "done badly"]) == "building | step 2 | done badly"


def test_a_flood_of_one_source_leaves_the_others_last_lines_in_the_file_and_the_ring(tmp_path):
    """A noisy service printing megabytes rotates the file twice over and fills the ring; a quiet service's URL
    line and the setup's output are still there, in `stem logs -s`, a later host's ring and the UI's history."""
    log = ColonyLog(tmp_path / "colony.log", ring_size=200, max_bytes=16384, keep_per_source=50)
    log.extend("setup", [f"setup step {i}" for i in range(80)])
    log.append("vite", "  Local:   http://localhost:5173/")
    for i in range(200):  # about 10 times the file's cap
        log.extend("web", [f"GET /item/{i}/{j} 200" for j in range(10)])

    def only(source):
        return [
            parse_line(line)[2] for line in read_tail(log.path, 100_000, lambda line: parse_line(line)[1] == source)
        ]

    assert only("vite") == ["  Local:   http://localhost:5173/"]
    assert only("setup") == [f"setup step {i}" for i in range(30, 80)]  # the setup's last 50 lines
    on_disk = [log.path, tmp_path / "colony.log.1", tmp_path / "colony.log.kept"]
    assert sum(path.stat().st_size for path in on_disk) <= 2 * 16384 + 16384 // 4  # still bounded
    everything = read_tail(log.path, 100_000, lambda _line: True)
    assert len(everything) == len(set(everything))  # no line twice

    # The ring: the last 200 lines and, before them, the quiet sources' last lines, in order, none twice.
    tail = log.tail(200)
    assert [e.text for e in tail if e.source == "vite"] == ["  Local:   http://localhost:5173/"]
    assert [e.text for e in tail if e.source == "setup"] == [f"setup step {i}" for i in range(30, 80)]
    assert [e.seq for e in tail] == sorted({e.seq for e in tail})
    assert [e.source for e in log.after(0)] == [e.source for e in tail]
    assert log.after(tail[-1].seq - 5) == tail[-5:]  # a client catching up gets only what it missed
    cut = recent(tail, 20, keep=50)  # the UI's cut of what it was sent: the others' lines stay in
    assert cut[-20:] == tail[-20:] and [e for e in cut if e.source != "web"] == [e for e in tail if e.source != "web"]
    assert len([e for e in cut if e.source == "web"]) == 50
    log.close()

    # A host started later (a restart) reads them back, numbered in the files' order.
    later = ColonyLog(tmp_path / "colony.log", ring_size=200, max_bytes=16384, keep_per_source=50)
    later.load()
    again = later.tail(200)
    assert [e.text for e in again if e.source == "vite"] == ["  Local:   http://localhost:5173/"]
    assert [e.text for e in again if e.source == "setup"] == [f"setup step {i}" for i in range(30, 80)]
    assert [e.seq for e in again] == sorted({e.seq for e in again})
    # ... and keeps them over its own next rotations.
    for i in range(100):
        later.extend("web", [f"GET /again/{i}/{j} 200" for j in range(10)])
    assert only("vite") == ["  Local:   http://localhost:5173/"]
    assert len(only("setup")) == 50
    assert [e.text for e in later.tail(200) if e.source == "vite"] == ["  Local:   http://localhost:5173/"]
    later.close()


def test_a_source_keeps_no_more_than_its_last_lines_once_others_print_on(tmp_path):
    log = ColonyLog(tmp_path / "colony.log", ring_size=50, max_bytes=4096, keep_per_source=5)
    for round_ in range(3):
        log.extend("api", [f"api {round_}.{i}" for i in range(20)])
        for i in range(60):
            log.append("web", f"web {round_}.{i} " + "x" * 60)
    texts = [e.text for e in log.tail(50) if e.source == "api"]
    assert texts == [f"api 2.{i}" for i in range(15, 20)]
    kept = read_tail(log.path, 100_000, lambda line: parse_line(line)[1] == "api")
    texts = [parse_line(line)[2] for line in kept]
    assert texts[-5:] == [f"api 2.{i}" for i in range(15, 20)]
    assert all(text.startswith("api 2.") for text in texts)  # earlier rounds' kept lines went
    log.close()


@pytest.mark.root
def test_a_disk_that_fills_in_the_middle_of_a_batch_leaves_no_half_line(tmp_path):
    """The write that meets the full disk takes part of a batch: the file still ends with a whole line, and the
    lines written once there is room again are lines of their own (not glued to a half of one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], check=True)
    try:
        log = ColonyLog(disk / "colony.log")
        log.append("web", "the first line")  # its page has room left for a part of the next batch
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        log.extend("web", [f"GET /{i} " + "x" * 80 for i in range(200)])  # about 20 KiB: a part fits
        assert log.write_error is not None
        text = log.path.read_text()
        assert text.endswith("\n") and len(text.splitlines()) > 1  # some whole lines of the batch went in
        filler.unlink()
        log._retry_at = 0.0  # the second has passed
        log.append("web", "after the room came back")
        assert log.write_error is None
        for line in log.path.read_text().splitlines():
            assert parse_line(line)[1] == "web", line
        assert log.path.read_text().splitlines()[-1].endswith("[web] after the room came back")
        log.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_ui_told_of_the_log_files_trouble_as_it_began_is_not_told_again_by_a_later_snapshot(tmp_path):
    """A UI open when the file stopped taking lines heard it then; the snapshot of its next subscription (another
    colony shown) says the same and tells it nothing new. A UI that first hears of it in a snapshot is told."""
    from core.events import Notice
    from core.host import protocol as p
    from core.host.client import HostLink
    from core.host.paths import HostPaths

    told: list[Notice] = []
    link = HostLink("alpha", HostPaths(tmp_path), lambda event: told.append(event) if isinstance(event, Notice) else 0)
    link._apply(p.NoticeMessage("error", trouble_message("alpha", "No space left on device")))
    link._apply(p.Snapshot(log_trouble="No space left on device"))
    assert [n.message for n in told] == [trouble_message("alpha", "No space left on device")]
    link._apply(p.NoticeMessage("info", trouble_message("alpha", None)))
    link._apply(p.Snapshot())
    assert len(told) == 2 and link.log_trouble == ""

    later: list[Notice] = []
    other = HostLink(
        "alpha", HostPaths(tmp_path), lambda event: later.append(event) if isinstance(event, Notice) else 0
    )
    other._apply(p.Snapshot(log_trouble="Read-only file system"))
    other._apply(p.Snapshot(log_trouble="Read-only file system"))
    assert [(n.level, n.message) for n in later] == [("error", trouble_message("alpha", "Read-only file system"))]
    assert trouble_told("alpha", "alpha: something else") is None


@pytest.mark.root
def test_on_a_full_disk_the_rotation_frees_the_old_generation_before_the_kept_lines_are_written(tmp_path):
    """The disk is full and the log's next batch rotates it: dropping colony.log.1 makes the room that the kept
    lines and the batch then take (keeping them first found no room, and the log stopped)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], check=True)
    try:
        log = ColonyLog(disk / "colony.log", max_bytes=256 << 10)
        log.append("vite", "  Local:   http://localhost:5173/")
        while not (disk / "colony.log.1").exists() or log.path.stat().st_size < 200 << 10:
            log.extend("web", [f"GET /{i} " + "x" * 90 for i in range(100)])
        with (disk / "filler").open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        log.extend("web", [f"GET /{i} " + "y" * 90 for i in range(1000)])  # 100 KiB: past the cap, a rotation
        assert log.write_error is None
        assert log.path.read_text().splitlines()[-1].endswith("GET /999 " + "y" * 90)
        vite = read_tail(log.path, 100_000, lambda line: parse_line(line)[1] == "vite")
        assert [parse_line(line)[2] for line in vite] == ["  Local:   http://localhost:5173/"]
        log.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
