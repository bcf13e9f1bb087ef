"""The agent of a colony: its program in a PTY inside the colony's namespace, rendered into a `StemScreen`.

`AgentSession` owns the PTY and the screen. Output is read on the event loop (`add_reader`) in bounded batches,
so an agent that floods cannot starve the loop or other colonies, and the UI hears about changed rows at most
once per frame. Activity (working, idle, attention, exited) is derived from output, the bell, the preset's
approval prompts and user input, and published as events only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ptyprocess import PtyProcess

from core import cgroups, netns, procs
from core.aio import wait_for
from core.errors import StemError
from core.events import AgentActivity, Event, ScreenChanged
from core.host.protocol import ScreenModes, screen_modes
from core.sandbox import ColonyInit
from core.screen import StemScreen
from core.screen_cells import row_text
from core.screen_queries import FRAME_TIMEOUT, Link, Palette
from core.settings import ResolvedAgent, user_shell
from core.xterm_input import encode_key

__all__ = [
    "ATTENTION",
    "EXITED",
    "IDLE",
    "WORKING",
    "AgentSession",
    "choose_argv",
    "encode_key",
]

WORKING = "working"
IDLE = "idle"
ATTENTION = "attention"
EXITED = "exited"

# Reading: one os.read asks for up to READ_SIZE; a batch ends at EAGAIN, at the byte cap or at READ_BUDGET.
READ_SIZE = 65536
BATCH_MAX = 65536
BATCH_MIN = 4096
READ_BUDGET = 0.004
# Feeding a batch to the screen costs far more than reading it, and its cost per byte depends on what the
# program prints (plain lines take the screen's fast path, cursor-addressed redraws do not). The byte cap
# adapts so that one feed takes about FEED_BUDGET, which bounds how long one callback holds the loop.
FEED_BUDGET = 0.006
# Sessions that flood at once share one loop turn: each one's read and feed budgets are divided by how many
# flooded within the last FLOOD_WINDOW, so a turn stays about one budget long however many colonies flood, and a
# keystroke's echo is not queued behind several full batches.
FLOOD_WINDOW = 0.05
_flooding: dict[int, float] = {}  # id(session) -> when it last filled a whole batch


def _flood_share(now: float) -> int:
    for key, at in list(_flooding.items()):
        if now - at > FLOOD_WINDOW:
            del _flooding[key]
    return max(1, len(_flooding))


# At most one ScreenChanged per session per frame (~60 Hz): the UI cannot show more, and a flood would
# otherwise make it re-render for every batch.
FRAME = 1 / 60
# Output within this long counts as working; after it, idle.
IDLE_AFTER = 1.5
# After the program exits, how long to wait for the PTY to report end of output before announcing the exit
# anyway (a background process of the agent may hold the terminal open).
DRAIN_GRACE = 0.25

BRACKET_OPEN = b"\x1b[200~"
BRACKET_CLOSE = b"\x1b[201~"


def choose_argv(resolved: ResolvedAgent, resume: bool) -> tuple[list[str], str | None]:
    """The argv to run for `resolved` and a notice to show, or None.

    A program that is not installed is replaced by the user's shell, so the colony is still usable; with
    `resume` (the colony's agent ran before) the preset's resume form is used where one exists.
    """
    if not resolved.available:
        shell = user_shell()
        return [shell], f"{resolved.argv[0]} is not installed here: started {shell} instead"
    if resume and resolved.resume_argv:
        return list(resolved.resume_argv), None
    return list(resolved.argv), None


class AgentSession:
    """One agent program in a PTY inside a colony, with its screen, activity and exit status.

    Everything runs on the event loop thread: construct anywhere, but call `start` (and the rest) from the
    loop. `emit`, `record_process` and `forget_process` are called on the loop thread too.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        netns_name: str,
        cwd: Path | str,
        env: Mapping[str, str],
        colony: str,
        emit: Callable[[Event], None],
        columns: int = 120,
        lines: int = 40,
        attention: Sequence[str] = (),
        record_process: Callable[[int, int], None] | None = None,
        forget_process: Callable[[int, int], None] | None = None,
        notice: str | None = None,
        idle_after: float = IDLE_AFTER,
        scrollback: int = 10_000,
        init: ColonyInit | None = None,
    ) -> None:
        if not argv:
            raise ValueError("AgentSession needs a program to run")
        self.argv = list(argv)
        self.netns_name = netns_name
        self.cwd = Path(cwd)
        self.env = dict(env)
        self.colony = colony
        self.init = init  # the colony's namespaces (core.sandbox), confined; None: isolation off
        self.attention_patterns = tuple(p for p in attention if p)
        self.notice = notice
        self.idle_after = idle_after
        self.screen = StemScreen(columns, lines, scrollback=scrollback)
        self.screen.set_responder(self._send)
        self._emit = emit
        # Called with each batch of output as the program wrote it, before the screen parses it (stem attach).
        self.output_taps: list[Callable[[bytes], None]] = []
        # Called with the program's clipboard writes (OSC 52 "selection;base64"), for the user's terminal.
        self.clipboard_taps: list[Callable[[list[str]], None]] = []
        self._clipboard: list[str] = []  # writes not yet taken by a terminal widget showing this session
        self._record_process = record_process
        self._forget_process = forget_process

        self.activity: str | None = None  # None until started
        self.exit_code: int | None = None  # exit(n) gives n, death by signal N gives -N (as subprocess)
        self.pid: int | None = None
        self.starttime = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting = False  # `start` or `launch` was called: once only
        self._spawned_size = (0, 0)  # the terminal's size the program was started with (lines, columns)
        self._proc: Any = None  # ptyprocess.PtyProcess; untyped library
        self._fd: int | None = None  # PTY master; None once closed
        self._pidfd: int | None = None
        self._reaped: asyncio.Event | None = None
        self._exited: asyncio.Event | None = None
        self._finished = False
        self._outbuf = bytearray()  # input the kernel could not take yet
        self._batch_cap = BATCH_MAX

        # Activity inputs.
        self._busy = False
        self._last_busy = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._attention: set[str] = set()  # reasons: "bell", "prompt"
        self._bells = 0
        self._match_rows: set[int] = set()  # visible rows showing an approval prompt
        self._unscanned: set[int] = set()  # rows changed since the last prompt scan
        self._caught_up = True  # the last read drained the PTY

        # ScreenChanged coalescing.
        self._flush_handle: asyncio.TimerHandle | None = None
        self._drain_handle: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        self._cursor_seen = (-1, -1, False)
        self._version_seen = -1
        self._modes_seen: tuple[frozenset[int], bool] = (frozenset(), False)
        # Synchronized output (2026): rows changed inside a frame go out when it ends, never half drawn.
        self._held = False  # a flush waits for the frame being drawn
        self._held_all = False
        self._settled = asyncio.Event()  # set while no frame holds the screen back
        self._settled.set()

        if notice:
            # Shown in the terminal itself, where the user looks, above whatever the replacement prints.
            self.screen.feed(f"\x1b[33m[stem] {notice}\x1b[0m\r\n".encode())

    # ----------------------------------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """True from `start` until the program has been reaped."""
        return self.pid is not None and self._reaped is not None and not self._reaped.is_set()

    def start(self) -> None:
        """Spawn the program in a new session inside the colony's namespace and start reading its output."""
        loop = self._claim_start()
        self._adopt(loop, self._spawn())

    async def launch(self) -> None:
        """`start`, with the spawn (a fork and the child's way into the colony: ~10 ms) in a thread, so that the
        loop goes on meanwhile (a colony host starts the agent beside its services)."""
        loop = self._claim_start()
        self._adopt(loop, await asyncio.to_thread(self._spawn))

    def _claim_start(self) -> asyncio.AbstractEventLoop:
        if self._starting:
            raise RuntimeError(f"the agent of {self.colony} was already started")
        self._starting = True
        return asyncio.get_running_loop()

    def _spawn(self) -> PtyProcess:
        """Fork the program into the colony (blocking); registered as ours before the orphan reaper can see it."""
        env = {**self.env, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        fd = netns.open_netns(self.netns_name)
        joins = cgroups.open_join(self.netns_name)  # the colony's cgroup has its namespace's name
        pass_fds = (fd, *joins) if self.init is None else (fd, self.init.pidfd, *joins)
        self._spawned_size = dimensions = (self.screen.lines, self.screen.columns)

        def start() -> PtyProcess:
            return PtyProcess.spawn(
                self.argv,
                cwd=str(self.cwd),
                env=env,
                dimensions=dimensions,
                preexec_fn=_child_setup(fd, netns.child_files(self.netns_name), joins, self.init, str(self.cwd)),
                pass_fds=pass_fds,  # ptyprocess closes every other fd before preexec_fn runs
            )

        try:
            # The orphan reaper must not take this child's exit status: spawn and register under its lock, so
            # even a program that exits at once is never reaped by it. (pty.fork already calls setsid.)
            with procs.spawning() as register:
                try:
                    proc = start() if self.init is None else self.init.fork_inside(start)
                except FileNotFoundError:
                    raise StemError(f"{self.colony}: agent program not found: {self.argv[0]}") from None
                except OSError as exc:
                    raise StemError(f"{self.colony}: cannot start agent {self.argv[0]}: {exc}") from exc
                register(proc.pid)
        finally:
            os.close(fd)
            for join in joins:
                os.close(join)
        return proc

    def _adopt(self, loop: asyncio.AbstractEventLoop, proc: PtyProcess) -> None:
        """On the loop: read the started program's output, and watch for its exit."""
        self._loop = loop
        self._proc = proc
        self.pid = pid = int(proc.pid)
        self._fd = master = int(proc.fd)
        self.starttime = procs.starttime(pid) or 0
        self._reaped = asyncio.Event()
        self._exited = asyncio.Event()
        if self._record_process is not None:
            self._record_process(pid, self.starttime)
        if self._spawned_size != (self.screen.lines, self.screen.columns):  # resized while `launch` spawned it
            proc.setwinsize(self.screen.lines, self.screen.columns)
        os.set_blocking(master, False)
        loop.add_reader(master, self._on_readable)
        # A pidfd becomes readable when the program exits, whoever still holds the terminal open.
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # kernels before 5.3: a thread waits instead
            threading.Thread(target=self._wait_in_thread, name=f"agent-wait-{pid}", daemon=True).start()
        else:
            loop.add_reader(self._pidfd, self._on_child_exit)
        self._touch()
        self._set_activity()

    async def stop(self, grace: float = 3.0) -> int | None:
        """End the program's process group: SIGHUP and SIGTERM, after `grace` seconds SIGKILL. Returns the
        exit code. SIGHUP is what a closing terminal sends (interactive shells ignore SIGTERM)."""
        if self._reaped is not None and self.pid is not None and not self._reaped.is_set():
            pgid = self.pid
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
                _killpg(pgid, sig)
            try:
                await wait_for(self._reaped.wait(), grace)
            except TimeoutError:
                _killpg(pgid, signal.SIGKILL)
                await wait_for(self._reaped.wait(), 10.0)
            # Members of the group that outlived the leader (it is reaped, but the group id stays in use
            # while they exist, so it cannot name anyone else).
            within = await asyncio.to_thread(procs.colony_pids, self.netns_name)
            if await asyncio.to_thread(procs.group_members, pgid, within):
                _killpg(pgid, signal.SIGKILL)
                # Delivered, not yet done: stop returns once they are gone, as its caller expects.
                await asyncio.to_thread(procs.wait_gone, lambda: set(procs.group_members(pgid, within)), 5.0)
        if self._reaped is not None and not self._finished:
            self._finish_exit()
        self.close()
        return self.exit_code

    async def wait(self) -> int | None:
        """Wait until the program has exited and its exit was announced; return its exit code."""
        if self._exited is None:
            raise RuntimeError(f"the agent of {self.colony} was not started")
        await self._exited.wait()
        return self.exit_code

    def close(self) -> None:
        """Stop watching the terminal: remove its reader and timers and close the PTY (the program gets
        SIGHUP from the kernel if it still runs). Its exit is still reaped and announced."""
        loop = self._loop
        if self._fd is not None and loop is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        self._close_master()
        for handle in (self._flush_handle, self._idle_handle, self._drain_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._idle_handle = self._drain_handle = None

    # ---------------------------------------------------------------------------------------------- input

    def write(self, data: bytes) -> None:
        """Send the user's input to the program. Input answers an approval prompt or a bell: attention ends."""
        if not data or self._fd is None:
            return
        if self._attention and not self._finished:
            self._attention.clear()
            self._touch()
            self._set_activity()
        self._send(data)

    def paste(self, text: str) -> None:
        """Send pasted text: newlines as CR like a terminal, bracketed when the program asked for it."""
        data = text.replace("\r\n", "\r").replace("\n", "\r").encode()
        if self.screen.bracketed_paste:
            # Text that contains the end marker must not end the paste early and be run as typed input.
            data = BRACKET_OPEN + data.replace(BRACKET_CLOSE, b"") + BRACKET_CLOSE
        self.write(data)

    @property
    def modes(self) -> ScreenModes:
        """The terminal modes the program asked for (keys, pastes, mouse and focus reports are encoded for them)."""
        return screen_modes(self.screen)

    def row_links(self, y: int) -> list[Link]:
        """The OSC 8 hyperlinks on row `y` of the screen."""
        return self.screen.queries.row_links(y)

    def take_clipboard(self) -> list[str]:
        """The program's clipboard writes (OSC 52 "selection;base64") since the last call."""
        taken, self._clipboard = self._clipboard, []
        return taken

    def set_palette(self, palette: Palette) -> None:
        """The colours the program is shown in: what it is told when it asks (OSC 10, 11, 4)."""
        self.screen.queries.palette = palette

    async def frame_settled(self) -> None:
        """Return once no synchronized-output frame is being drawn (at most its timeout later)."""
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                await wait_for(self._settled.wait(), FRAME_TIMEOUT * 2)

    def resize(self, columns: int, lines: int) -> None:
        """Resize the screen and the PTY; the kernel sends the program SIGWINCH."""
        if columns < 1 or lines < 1:
            raise ValueError(f"terminal size must be positive, got {columns}x{lines}")
        self.screen.resize(lines, columns)
        if self._fd is not None:
            self._proc.setwinsize(lines, columns)
        # Every row may be different now; the UI redraws at once rather than at the next frame.
        self._flush(all_rows=True)

    def _send(self, data: bytes) -> None:
        """Write without blocking the loop; what the kernel cannot take now waits for the fd to be writable."""
        fd = self._fd
        if fd is None or self._loop is None:
            return
        if self._outbuf:
            self._outbuf += data
            return
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the terminal is gone (EIO): the program exited, and its input goes nowhere
        if written < len(data):
            self._outbuf += data[written:]
            self._loop.add_writer(fd, self._on_writable)

    def _on_writable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            written = os.write(fd, self._outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._outbuf)
        del self._outbuf[:written]
        if not self._outbuf and self._loop is not None:
            self._loop.remove_writer(fd)

    # --------------------------------------------------------------------------------------------- output

    def _on_readable(self) -> None:
        """Read one bounded batch and feed it to the screen in one go.

        The reader stays registered: the selector is level-triggered, so a PTY that still has data is
        served again on the next loop iteration, after every other ready callback had its turn. Bounding
        this callback (bytes and time) is what keeps a flood from starving other colonies and the UI.
        """
        fd = self._fd
        if fd is None:
            return
        chunks: list[bytes] = []
        size = 0
        started = time.monotonic()
        share = _flood_share(started)
        cap = max(BATCH_MIN, self._batch_cap // share)
        budget = READ_BUDGET / share
        eof = False
        caught_up = False
        while True:
            try:
                data = os.read(fd, min(READ_SIZE, cap - size))
            except BlockingIOError:
                caught_up = True
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # Linux reports "no program holds the terminal" as EIO
                    raise
                data = b""
            if not data:
                eof = True
                break
            chunks.append(data)
            size += len(data)
            if size >= cap or time.monotonic() - started >= budget:
                _flooding[id(self)] = started  # more is waiting: this session floods
                break
        if chunks:
            # A batch cut short by the budget may have taken the last byte: ask the kernel what is left.
            self._caught_up = caught_up or eof or _pending(fd) == 0
            self._feed(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        if caught_up or eof:
            _flooding.pop(id(self), None)
        if eof:
            self._on_eof()

    def _feed(self, data: bytes) -> None:
        for tap in self.output_taps:
            tap(data)
        started = time.monotonic()
        screen = self.screen
        screen.queries.feed(data, screen.feed)  # answers queries in order, keeps clipboard writes and links
        elapsed = time.monotonic() - started
        if len(data) >= BATCH_MIN and elapsed > 0:
            # Smoothed, so one odd batch does not swing the cap.
            target = len(data) / elapsed * FEED_BUDGET
            self._batch_cap = int(min(BATCH_MAX, max(BATCH_MIN, (self._batch_cap + target) / 2)))
        if self.screen.bells != self._bells:
            self._bells = self.screen.bells
            self._attention.add("bell")
        self._touch()
        self._request_flush()
        self._set_activity()

    def _request_flush(self) -> None:
        """The first change after a quiet frame goes out at once (typing echoes stay instant); changes within
        a frame of the last event are merged into one event at the end of that frame."""
        if self._loop is None:
            return
        if self._flush_handle is not None:
            if not (self._held and self.screen.queries.frame_remaining() == 0):
                return
            self._flush_handle.cancel()  # the frame it waited for has ended: its rows go out now
            self._flush_handle = None
        wait = self._last_flush + FRAME - self._loop.time()
        if wait <= 0:
            self._flush()
        else:
            self._flush_handle = self._loop.call_later(wait, self._flush)

    def _flush(self, all_rows: bool = False) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        screen = self.screen
        writes = screen.queries.take_clipboard()
        if writes:
            self._clipboard = (self._clipboard + writes)[-8:]
            for tap in self.clipboard_taps:
                tap(writes)
        wait = screen.queries.frame_remaining()
        if wait > 0 and not self._finished and self._loop is not None:
            # A synchronized-output frame is being drawn: its rows go out whole when it ends (the feed that ends
            # it asks for a flush) or when it times out.
            self._held = True
            self._held_all |= all_rows
            self._settled.clear()
            self._flush_handle = self._loop.call_later(wait, self._flush)
            return
        held, self._held = self._held, False
        all_rows |= self._held_all
        self._held_all = False
        self._settled.set()
        if self._loop is not None:
            self._last_flush = self._loop.time()
        rows = screen.take_dirty()
        if all_rows:
            rows = set(range(screen.lines))
        cursor = screen.cursor
        state = (cursor.x, cursor.y, bool(cursor.hidden))
        if state != self._cursor_seen:
            # The UI draws the cursor into its row: the row it left and the row it is on both change.
            rows.update(y for y in (self._cursor_seen[1], cursor.y) if 0 <= y < screen.lines)
            self._cursor_seen = state
        if self.attention_patterns:
            self._unscanned |= rows
            if self._caught_up:
                self._scan_prompts()
        # Modes set with nothing drawn (vim's application cursor keys, a mouse mode) change how a client encodes
        # the next key or click: they are a change of their own.
        modes = (frozenset(screen.mode), screen.queries.app_keypad)
        if rows or screen.version != self._version_seen or held or modes != self._modes_seen:
            self._version_seen = screen.version
            self._modes_seen = modes
            self._emit(ScreenChanged(self.colony, frozenset(rows)))

    def _scan_prompts(self) -> None:
        """Look for approval prompts in the rows that changed.

        A prompt raises attention when the number of rows showing one grows (a new prompt appeared: a row
        that only scrolled is not new, and one the user already answered does not count again), and the
        prompt reason ends when no row shows one any more. Scanning waits until output has caught up, so a
        flood pays for it once at its end rather than every frame.
        """
        screen = self.screen
        lines, columns, buffer = screen.lines, screen.columns, screen.buffer
        before = len(self._match_rows)
        for y in self._unscanned:
            if y >= lines:
                continue
            text = row_text(buffer[y], columns)
            if any(p in text for p in self.attention_patterns):
                self._match_rows.add(y)
            else:
                self._match_rows.discard(y)
        self._unscanned.clear()
        # Rows past the bottom are gone after a resize; the rows they moved to were all rescanned.
        self._match_rows = {y for y in self._match_rows if y < lines}
        after = len(self._match_rows)
        if after > before:
            self._attention.add("prompt")
        elif after == 0:
            self._attention.discard("prompt")
        self._set_activity()

    # ----------------------------------------------------------------------------------------------- exit

    def _on_eof(self) -> None:
        """No process holds the terminal any more: everything the program printed has been read."""
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._close_master()
        if self._reaped is not None and self._reaped.is_set():
            self._finish_exit()

    def _on_child_exit(self) -> None:
        """The pidfd is readable: the program has exited."""
        pid = self.pid
        if pid is None:
            return
        status: int | None
        try:
            found, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            found, status = pid, None  # reaped by someone else: the exit code is lost
        if found == 0:
            return  # not exited after all; the pidfd stays watched
        self._on_reaped(status)

    def _wait_in_thread(self) -> None:
        assert self.pid is not None and self._loop is not None
        try:
            status: int | None = os.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            status = None
        self._loop.call_soon_threadsafe(self._on_reaped, status)

    def _on_reaped(self, status: int | None) -> None:
        pid = self.pid
        if pid is None or self._reaped is None or self._reaped.is_set():
            return
        if self._loop is not None and self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
        procs.forget_child(pid)
        if self._forget_process is not None:
            self._forget_process(pid, self.starttime)
        self._reaped.set()
        if self._fd is None:
            self._finish_exit()
        elif self._loop is not None:
            # Its last output may still be in the PTY: wait for end of output, but not forever.
            self._drain_handle = self._loop.call_later(DRAIN_GRACE, self._finish_exit)

    def _finish_exit(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._caught_up = True
        self._flush()
        self._set_activity()
        if self._exited is not None:
            self._exited.set()

    def _close_master(self) -> None:
        if self._fd is None:
            return
        self._fd = None
        self._outbuf.clear()
        # Close through ptyprocess's file object (it owns the fd), and mark it closed so that its __del__
        # does not try to close, sleep and wait for the child itself.
        self._proc.fileobj.close()
        self._proc.closed = True

    # ------------------------------------------------------------------------------------------- activity

    def _touch(self) -> None:
        """Something happened now: working until `idle_after` passes without anything else."""
        if self._loop is None or self._finished:
            return
        self._busy = True
        self._last_busy = self._loop.time()
        # One timer, pushed forward lazily: rescheduling it for every batch would churn the loop's heap.
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(self._last_busy + self.idle_after, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._loop is None or self._finished:
            return
        due = self._last_busy + self.idle_after
        if self._loop.time() < due:
            self._idle_handle = self._loop.call_at(due, self._idle_check)
            return
        self._busy = False
        self._set_activity()

    def _set_activity(self) -> None:
        if self._finished:
            new = EXITED
        elif self._attention:
            new = ATTENTION
        elif self._busy:
            new = WORKING
        else:
            new = IDLE
        if new != self.activity:
            self.activity = new
            self._emit(AgentActivity(self.colony, new, self.exit_code if new == EXITED else None))


def _child_setup(
    netns_fd: int,
    resolv: bytes | None,
    joins: Sequence[int] = (),
    init: ColonyInit | None = None,
    cwd: str = "/",
) -> Callable[[], None]:
    """The preexec_fn: runs in the child between fork and exec."""

    def setup() -> None:
        cgroups.join(joins)  # before anything runs: the agent is held to the colony's limits from its first byte
        netns.enter(netns_fd)
        # Python ignores these; an ignored signal stays ignored across exec (subprocess restores them too).
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        if init is None:
            netns.enter_mounts(resolv)
        else:
            init.enter(cwd, terminal=True)

    return setup


def _pending(fd: int) -> int:
    """Bytes waiting to be read on `fd` (FIONREAD)."""
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return int.from_bytes(buf, sys.byteorder)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
