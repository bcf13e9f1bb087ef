"""The stem commands that need the orchestration core: each runs against the environment's `Hive` in an event loop.

`stem.cli` parses the command line and turns errors into one line; it imports this module (and with it asyncio and
the core) only for a command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.egress import EgressInForce
from core.errors import ConfigError, StemError
from core.words import plural
from stem.cli import EXIT_USAGE, print_listing

if TYPE_CHECKING:
    from core.api import HiveAPI
    from core.colony_log import LogMark
    from core.events import Event
    from core.merge import ColonyDiff, Conflict, MergeResult

EXIT_CONFLICTS_LEFT = 1  # stem sync: the merge is in the colony's worktree with conflicts for its agent (as git merge)


# The commands that make the hive when there is none yet; the others read one (`_NoHive`).
MAKE_HIVE = frozenset({"spawn", "serve"})


class _NoHive:
    """The hive of a STEM_HOME that does not exist, for a command that only reads or changes colonies: it has none,
    so `stem ls` lists none, `stem gc` has nothing to clean and a colony named is not in it (exit 2), and nothing is
    made. Opening the hive would make the home and claim a prefix and an address pool for it: a typo in STEM_HOME
    would leave a hive behind, and after a reboot (claims live in /run) it could take the default prefix, which the
    user's own hive then finds taken."""

    def __init__(self, args: argparse.Namespace) -> None:
        names = getattr(args, "names", None) or [getattr(args, "name", None)]
        self._name = names[0]

    def __getattr__(self, attr: str) -> object:
        from core.errors import NoSuchColony

        raise NoSuchColony.named(self._name)

    async def revive_dead_hosts(self) -> None:
        pass

    def listing(self) -> list[object]:
        return []

    def colonies(self) -> list[object]:
        return []

    async def gc(self) -> object:
        from core.gc import GcReport

        return GcReport()

    async def close(self) -> None:
        pass


def _hive(args: argparse.Namespace) -> HiveAPI:
    from core.claims import claimed
    from core.locations import stem_home

    home = stem_home()
    # gc goes on for a hive whose home was removed while its claim (and its colonies' leftovers) stayed; the home it
    # opens for that is removed again after it (`_run`), and the claim with it.
    if args.command not in MAKE_HIVE and not home.is_dir():
        if args.command != "gc" or not claimed(home):
            return _NoHive(args)  # type: ignore[return-value]  # what these commands ask of a hive
        while not home.parent.exists():  # (the folders above it that opening it makes go with it)
            home = home.parent
        args.gone_home = home
    from core.hive import Hive

    hive = Hive.from_environment()
    hive.on_lock_wait = lambda line: print(f"stem: {line}", file=sys.stderr, flush=True)
    return hive


async def cmd_spawn(hive: HiveAPI, args: argparse.Namespace) -> int:
    if args.agent is not None and not args.agent.strip():
        raise StemError("--agent is empty: give a preset (claude, codex, shell, ...) or a command, or leave it out")
    from core.events import Notice

    events = hive.subscribe()  # what the spawn warns of (a colony.toml left uncommitted) goes to stderr
    try:
        rec = await hive.spawn(args.name, Path(args.repo), args.base, agent=args.agent, task=args.task)
    finally:
        hive.unsubscribe(events)
    print(f"{rec.name}  {rec.state}  {rec.ip}  {rec.branch}  {rec.worktree}")
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, Notice) and event.level == "warning" and event.colony == rec.name:
            print(f"stem: warning: {event.message}", file=sys.stderr)
    # The host started the user's shell in place of an agent that is not installed (its log says so): said here too.
    from core.settings import resolve_agent

    spec, _source, started = await asyncio.to_thread(hive.agent_choice, rec.name)
    with contextlib.suppress(StemError):
        resolved = resolve_agent(spec or None, hive.settings, rec.task or None)
        if started and not resolved.available:
            print(
                f"stem: warning: {resolved.argv[0]} is not installed here: {rec.name}'s agent is {started} instead",
                file=sys.stderr,
            )
    return 0


async def cmd_ls(hive: HiveAPI, args: argparse.Namespace) -> int:
    await hive.revive_dead_hosts()  # a host that died (kill -9) is noticed by the next stem command
    listed = await asyncio.to_thread(hive.listing)
    if not args.json:
        print_listing(listed)
        return 0
    if not listed:
        print("[]")
        return 0
    now = time.time()
    merging = {status.colony: status.as_dict() for status in await hive.merge_statuses()}
    preview = await asyncio.to_thread(hive.preview_urls)  # service -> URL through the preview port
    pids = await asyncio.to_thread(hive.service_pids)
    from core import sandbox

    isolation = list(sandbox.status(hive.settings.isolation))  # what is not enforced, one line each
    out = []
    for row in listed:
        r = row.rec
        out.append(
            {
                "name": r.name,
                "state": r.state,
                "stage": r.stage,
                "reason": r.reason,
                "ip": r.ip,
                "host_ip": r.host_ip,
                "egress": EgressInForce.from_json(r.egress).as_dict() if r.egress else None,
                "branch": r.branch,
                "base": r.base_ref,
                "worktree": r.worktree,
                "db": r.db_path,
                "repo": r.repo,
                "created_at": r.created_at,
                "age": round(now - r.created_at, 1),
                "services": row.services,
                "service_pids": pids.get(r.name, {}),  # as the host numbers them (`ps` outside the colony)
                "agent": row.agent,
                "host": row.hosted,
                "host_stopped": row.stopped_host is not None,  # SIGSTOP: "services" and "agent" are as it left them
                "preview": preview.get(r.name, {}),
                "isolation": isolation,
                **hive.limits(r.name).as_dict(),  # limits in force, usage now, OOM kills and refused forks
                **merging.get(r.name, {}),
                **hive.peers(r.name).as_dict(),  # whom it reads (.shared/NAME/) and who reads it
            }
        )
    print(json.dumps(out, indent=2))
    return 0


async def cmd_exec(hive: HiveAPI, args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise StemError("stem exec: no command given (stem exec NAME -- COMMAND ...)")
    from core import cgroups
    from stem import exec_pty

    group = hive.get(args.name).netns
    kills_before = await asyncio.to_thread(cgroups.oom_kills, group)
    loop = asyncio.get_running_loop()
    wait: Callable[[], int]
    guard = await asyncio.to_thread(exec_pty.Guard)  # a kill -9 of this process ends the command too
    try:
        if not exec_pty.wanted():
            running = await hive.exec(args.name, argv, started=guard.watch)
            wait = running.proc.wait
        else:  # from a terminal: a PTY of its own (see stem/exec_pty.py)
            master, slave = exec_pty.open_pty(1)
            try:
                running = await hive.exec(
                    args.name, argv, stdin=slave, stdout=slave, stderr=slave, terminal=True, started=guard.watch
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            loop.add_signal_handler(signal.SIGWINCH, exec_pty.copy_size, 1, master)
            proc = running.proc

            def wait() -> int:  # type: ignore[misc]  # the other branch's
                return exec_pty.session(master, proc)
    except BaseException:
        await asyncio.to_thread(guard.release)
        raise

    if running.warning:
        print(f"stem: warning: {running.warning}", file=sys.stderr, flush=True)

    def forward(sig: int) -> None:
        # The child has its own session, so the terminal's signals reach only us: pass them on.
        try:
            os.killpg(running.proc.pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        loop.add_signal_handler(sig, forward, sig)
    try:
        code: int = await asyncio.to_thread(wait)
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)  # before anything reuses the PTY's descriptor
        await asyncio.to_thread(guard.release)
        await asyncio.to_thread(hive.exec_finished, running)
    killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)  # itself, or a child its shell reports
    if killed and (await asyncio.to_thread(cgroups.oom_kills, group) or 0) > (kills_before or 0):
        # The shell would only say "Killed": say by what, and where the rest is.
        print(
            f"stem: {args.name} ran out of memory (its [limits] memory): the kernel killed {argv[0]} or a process "
            f"of its; stem logs {args.name} names it",
            file=sys.stderr,
            flush=True,
        )
    return code if code >= 0 else 128 - code


async def cmd_attach(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core import lifecycle as lc
    from core.errors import WrongState
    from stem.attach import RELEASE_BINDING, attach, release_key

    rec = hive.get(args.name)
    if rec.state == lc.RUNNING and not hive.host_running(rec.name):
        await hive.revive(rec.name)  # its host died: the next stem command brings it back
    if rec.state != lc.RUNNING:
        hint = f"stem start {rec.name}" if rec.state in lc.STARTABLE else "wait until it is running (stem ls)"
        raise WrongState(f"{rec.name} is {rec.state}, not running: {hint}")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise StemError("stem attach needs a terminal")
    socket = hive.host_socket(rec.name)
    if not socket.exists():
        raise StemError(f"{rec.name} has no running host: stem start {rec.name}")
    settings = hive.settings
    key, warning = release_key(
        settings.keys.get(RELEASE_BINDING), settings.key_lines.get(RELEASE_BINDING, "config.toml")
    )
    if warning:
        print(f"stem: {warning}", file=sys.stderr)
    return await attach(socket, rec.name, key, sys.stdin.fileno(), sys.stdout.fileno())


async def cmd_stop(hive: HiveAPI, args: argparse.Namespace) -> int:
    # Each colony has its own actor and lock: stopping several at once takes about as long as stopping one.
    results = await hive.stop_many(args.names)
    for result in results:
        if isinstance(result, BaseException):
            raise result
        print(f"{result.name}  {result.state}")
    return 0


async def cmd_start(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.config import load_colony_config

    for name in args.names:
        rec = await hive.start(name)
        print(f"{rec.name}  {rec.state}  {rec.ip}")
        try:
            await asyncio.to_thread(load_colony_config, Path(rec.worktree))
        except ConfigError as exc:  # the start took the last one that held (core.config.colony_config_for)
            print(f"stem: warning: {exc}; started with the last colony.toml that held", file=sys.stderr)
    return 0


async def cmd_destroy(hive: HiveAPI, args: argparse.Namespace) -> int:
    # Side by side, as `stem stop` stops them: the firewall table and preview routes are updated once at the end.
    results = await hive.destroy_many(args.names, force=args.force)
    failed = next((result for result in results if isinstance(result, BaseException)), None)
    for report in results:
        if isinstance(report, BaseException):
            continue
        print(f"destroyed {report.name}")
        _note(report.note)
        if report.kept_branch:
            print(
                f"kept branch {report.kept_branch}: {plural(report.unmerged, 'commit')} not merged anywhere "
                f"(merge it, or drop it with git branch -D {report.kept_branch})"
            )
    if failed is not None:
        raise failed
    return 0


def _note(text: str) -> None:
    if text:
        print(f"stem: note: {text}", file=sys.stderr)


def _stat(diff: ColonyDiff) -> list[str]:
    """git's --stat, with uncommitted files marked."""
    width = max(len(f.path) for f in diff.files)
    most = max(f.added + f.removed for f in diff.files) or 1
    scale = min(1.0, 40 / most)
    lines = []
    for f in diff.files:
        bar = "+" * round(f.added * scale) + "-" * round(f.removed * scale)
        mark = "  (uncommitted)" if f.path in diff.uncommitted else ""
        lines.append(f" {f.path.ljust(width)} | {f.added + f.removed:>5} {bar}{mark}")
    added, removed = sum(f.added for f in diff.files), sum(f.removed for f in diff.files)
    against = f"against {diff.target}" if diff.target else f"since {diff.base[:12]}"
    summary = (
        f" {plural(len(diff.files), 'file')} changed, {plural(added, 'insertion')}(+), "
        f"{plural(removed, 'deletion')}(-) {against}"
    )
    uncommitted = sum(1 for f in diff.files if f.path in diff.uncommitted)
    return [*lines, summary + (f"; {uncommitted} uncommitted" if uncommitted else "")]


async def cmd_diff(hive: HiveAPI, args: argparse.Namespace) -> int:
    diff = await hive.target_diff(args.name, args.into, text=not args.stat)
    if args.json:
        print(json.dumps(diff.as_dict(), indent=2))
        return 0
    _note(diff.note)
    if not diff.files:
        print(f"{diff.colony} has no changes against {diff.target or diff.base[:12]}", file=sys.stderr)
    elif args.stat:
        print("\n".join(_stat(diff)))
    else:
        sys.stdout.write(diff.text)
    return 0


async def cmd_commit(hive: HiveAPI, args: argparse.Namespace) -> int:
    result = await hive.commit(args.name, args.message)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(
            f"committed {plural(len(result.files), 'file')} of {result.colony} on {result.branch} "
            f"as {result.commit[:12]}"
        )
    return 0


def _conflicts(conflicts: tuple[Conflict, ...], target: str, colony: str) -> None:
    for conflict in conflicts:
        print(f"  {conflict.describe(target, colony)}", file=sys.stderr)


def _merged(result: MergeResult) -> None:
    verb = "squashed" if result.how == "squash" else "merged"
    what = {"fast-forward": "fast-forward to", "merge": "merge commit", "squash": "commit"}[result.how]
    print(
        f"{verb} {result.colony} into {result.target}: {what} {result.new[:12]} "
        f"({plural(result.commits, 'commit')}, {plural(len(result.files), 'file')})"
    )
    if result.checkout:
        print(f"  {result.checkout} has {result.target} checked out: brought to {result.new[:12]}")
    if result.retries:
        print(f"  {result.target} moved meanwhile: merged onto its new tip ({result.retries} retry)")
    _note(result.note)
    if result.uncommitted:
        _note(
            f"{result.colony} has {plural(len(result.uncommitted), 'uncommitted file')}, not part of the merge "
            f"(stem commit {result.colony} -m MESSAGE, then merge again)"
        )


async def cmd_merge(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.merge import MergeConflict, NothingToMerge

    if args.all == (args.name is not None):
        raise StemError("stem merge: name a colony, or --all for every colony (not both)")
    if args.all:
        return await _merge_all(hive, args)
    try:
        result = await hive.merge(args.name, into=args.into, squash=args.squash, message=args.message)
    except MergeConflict as exc:
        if args.json:
            print(json.dumps(exc.as_dict(), indent=2))
        print(f"stem: {exc}", file=sys.stderr)
        _conflicts(exc.conflicts, exc.target, exc.colony)
        return exc.exit_code
    except NothingToMerge as exc:
        if args.json:  # a script reads the outcome from stdout whatever it is (the line on stderr says it too)
            print(json.dumps({"colony": args.name, "result": "nothing to merge", "reason": str(exc)}, indent=2))
        raise
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _merged(result)
        print(f"{result.colony}'s branch is merged: stem destroy {result.colony} removes the colony and the branch")
    return 0


async def _merge_all(hive: HiveAPI, args: argparse.Namespace) -> int:
    """Each colony in spawn order, each merge atomic; the first that fails (a conflict, a dirty checkout of its
    target) stops the run with the earlier ones merged."""
    from core.merge import MergeConflict, NothingToMerge

    if args.message:
        raise StemError("stem merge --all: -m would give every merge the same message; merge one by one for that")
    names = [rec.name for rec in await asyncio.to_thread(hive.colonies)]
    merged: list[MergeResult] = []
    skipped: list[dict[str, str]] = []
    stopped: dict[str, object] | None = None
    for i, name in enumerate(names):
        try:
            result = await hive.merge(name, into=args.into, squash=args.squash)
        except NothingToMerge as exc:
            skipped.append({"colony": name, "reason": str(exc)})
            if not args.json:
                print(f"nothing to merge from {name}")
            continue
        except StemError as exc:
            stopped = exc.as_dict() if isinstance(exc, MergeConflict) else {"colony": name, "error": str(exc)}
            stopped["not_tried"] = names[i + 1 :]
            print(f"stem: {exc}", file=sys.stderr)
            if isinstance(exc, MergeConflict):
                _conflicts(exc.conflicts, exc.target, exc.colony)
            if names[i + 1 :]:
                print(f"stem: stopped at {name}; not tried: {', '.join(names[i + 1 :])}", file=sys.stderr)
            break
        merged.append(result)
        if not args.json:
            _merged(result)
    if args.json:
        out = {"merged": [r.as_dict() for r in merged], "skipped": skipped, "stopped": stopped}
        print(json.dumps(out, indent=2))
    return EXIT_USAGE if stopped is not None else 0


async def cmd_sync(hive: HiveAPI, args: argparse.Namespace) -> int:
    result = await hive.sync(args.name, args.source)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.how == "up to date":
        print(f"{result.colony} is up to date with {result.target}")
    elif result.how != "conflicts":
        print(
            f"synced {result.colony} with {result.target}: {plural(result.commits, 'commit')} brought in "
            f"({result.how}, now at {result.new[:12]})"
        )
    if not args.json:
        _note(result.note)
    if result.how != "conflicts":
        return 0
    if not args.json:
        print(
            f"stem: merging {result.target} into {result.colony} left {plural(len(result.conflicts), 'file')} "
            "in conflict in its worktree, for its agent to resolve (then commit)",
            file=sys.stderr,
        )
        _conflicts(result.conflicts, result.target, result.colony)
    return EXIT_CONFLICTS_LEFT


async def cmd_logs(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.colony_log import parse_line, read_tail, read_tail_marked
    from core.config import LOG_SOURCES

    rec = hive.get(args.name)  # an unknown colony is an error, not an empty log
    if args.follow and rec.state == "running" and not hive.host_running(rec.name):
        await hive.revive(rec.name)  # following a colony whose host died: bring it back first
    path = hive.log_path(args.name)
    if args.service is not None and args.service not in LOG_SOURCES:
        known = await asyncio.to_thread(hive.service_names, args.name)
        if args.service not in known:
            listed = ", ".join(known) if known else "none"
            raise StemError(
                f"{args.name} has no service named {args.service!r} (its services: {listed}; and Stem's own: "
                f"{', '.join(LOG_SOURCES)})"
            )

    def wanted(line: str) -> bool:
        return args.service is None or parse_line(line)[1] in (args.service, f"{args.service}!")

    # On a terminal, what a service printed keeps its colours but not its other control sequences (a progress
    # bar's erase-line and cursor-up would erase the lines above it, as the UI's log pane never lets them).
    shown = _terminal_safe if sys.stdout.isatty() else str
    # Followed, the tail is the whole lines, and the follow goes on from where they end: a line written meanwhile
    # (the host query below takes a moment) was lost between the two.
    mark: LogMark | None = None
    if args.follow:
        tail, mark = await asyncio.to_thread(read_tail_marked, path, args.lines, wanted)
    else:
        tail = await asyncio.to_thread(read_tail, path, args.lines, wanted)  # a line being written shown as it is
    for line in tail:
        print(shown(line))
    if hive.host_running(rec.name):
        # The file is what is shown: while its host cannot write it (a full disk), the newest lines are not in it.
        from core.colony_log import trouble_message
        from core.host.client import log_trouble
        from core.host.paths import HostPaths

        why = await log_trouble(HostPaths(path.parent))  # the colony's folder holds its log and its host's socket
        if why:
            sys.stdout.flush()
            print(f"stem: {trouble_message(rec.name, why)}; the UI's Logs tab shows them", file=sys.stderr)
    if args.follow:
        sys.stdout.flush()

        def show(line: str) -> None:
            if wanted(line):
                print(shown(line), flush=True)

        await _follow_until_destroyed(path, show, mark)
        print(f"stem: {args.name} was destroyed", file=sys.stderr)
    return 0


GONE_CHECK = 0.5  # seconds between looks at whether a followed colony still exists
FOLLOW_DRAIN = 0.5  # ...and how long its log must have been quiet, once it is gone, to have been read to its end


async def _follow_until_destroyed(path: Path, show: Callable[[str], None], since: LogMark | None = None) -> None:
    """`show` each line appended to a colony's log (`path`) from now on, until the colony is destroyed: its folder
    gone, or another colony's by the same name. A destroyed colony's follower waited for ever, saying nothing. What its
    stop wrote last is still shown: follow_file reads a removed file to its end within its interval."""
    from core.colony_log import follow_file

    folder = path.parent

    def identity() -> int | None:
        try:
            return folder.stat().st_ino
        except FileNotFoundError:
            return None

    mine = identity()
    last = time.monotonic()

    async def printing() -> None:
        nonlocal last
        async for line in follow_file(path, since=since):
            last = time.monotonic()
            show(line)

    task = asyncio.create_task(printing())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=GONE_CHECK)
            if mine is not None and identity() != mine and time.monotonic() - last >= FOLLOW_DRAIN:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# A terminal's sequences and controls in a log line, but SGR (colours) and tabs: OSC (titles, links) to its end,
# other CSI and escapes, and C0/C1 controls.
_UNSAFE = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b\[(?![0-9;:]*m)[0-?]*[ -/]*[@-~]"  # CSI but SGR
    r"|\x1b\[[0-?]*+[ -/]*+(?![@-~])"  # a CSI cut short
    r"|\x1b(?!\[)(?:[()*+#%][ -~]|[ -~])?"  # other escapes (a charset's designation with its final)
    r"|[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f-\x9f]"  # controls but tab (and ESC, whose sequences are above)
)


def _terminal_safe(line: str) -> str:
    return _UNSAFE.sub("", line)


async def cmd_serve(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.events import AgentActivity, ColonyRemoved, LogLine, Notice, ServiceState, StateChanged

    events = hive.subscribe()
    await hive.attach()
    watched = [rec.name for rec in hive.colonies()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"stem serve: watching {hive.home} with {len(watched)} colonies (Ctrl-C detaches; colonies keep running)",
        flush=True,
    )

    # On a terminal, what services printed (their log lines, the tail a failure quotes) keeps its colours but not its
    # other control sequences, as `stem logs` shows it: a dev server's clear-screen cleared the watcher's terminal.
    safe = sys.stdout.isatty()

    def show(event: Event) -> str | None:
        line = describe(event)
        if line is None or not safe:
            return line
        return "\n".join(_terminal_safe(part) for part in line.split("\n"))

    def describe(event: Event) -> str | None:
        stamp = time.strftime("%H:%M:%S")
        if isinstance(event, StateChanged):
            extra = f" ({event.stage}: {event.reason})" if event.reason else ""
            return f"{stamp} {event.colony} {event.state}{extra}"
        if isinstance(event, LogLine):
            return f"{stamp} {event.colony} [{event.source}] {event.text}"
        if isinstance(event, ServiceState):
            code = f" ({event.code})" if event.code is not None else ""
            return f"{stamp} {event.colony} service {event.service} {event.state}{code}"
        if isinstance(event, AgentActivity):
            code = f" ({event.code})" if event.code is not None else ""
            return f"{stamp} {event.colony} agent {event.activity}{code}"
        if isinstance(event, Notice):
            return f"{stamp} {event.level}: {event.message}"
        if isinstance(event, ColonyRemoved):
            return f"{stamp} {event.colony} removed"
        return None

    # A colony that comes while serve watches (spawned from a shell, another UI) prints before serve links to its
    # host, which it does once the registry says so: the first word of it brings what its log holds so far, and the
    # live lines it held already are not shown twice.
    # Per colony followed, the last log line shown before its live ones (0: none, its live lines all shown).
    shown_up_to = dict.fromkeys(watched, 0)

    def emit(event: Event) -> None:
        line = show(event)
        if line:
            print(line, flush=True)

    async def catch_up(colony: str) -> None:
        last = 0
        for entry in await hive.log_entries(colony):
            emit(LogLine(colony, entry.seq, entry.at, entry.source, entry.text))
            last = entry.seq
        shown_up_to[colony] = last

    async def printer() -> None:
        while True:
            event = await events.get()
            colony = getattr(event, "colony", "")
            if isinstance(event, ColonyRemoved):
                shown_up_to.pop(colony, None)  # one spawned by that name later is another
            elif colony and colony not in shown_up_to:
                await catch_up(colony)
            if not (isinstance(event, LogLine) and event.seq <= shown_up_to.get(colony, 0)):
                emit(event)

    printing = asyncio.create_task(printer())
    await stop.wait()
    await hive.detach()
    while not events.empty():
        emit(events.get_nowait())
    printing.cancel()
    print("stem serve: detached (colonies keep running; stem stop NAME ends one)", flush=True)
    return 0


async def cmd_peer(hive: HiveAPI, args: argparse.Namespace) -> int:
    if args.refresh and args.source is not None:
        raise StemError("stem peer: --from OTHER adds a peering, --refresh refreshes them all: not both")
    if args.follow and args.source is None:
        raise StemError("stem peer: --follow needs --from OTHER (the colony whose changes to follow)")
    if args.refresh:
        rows = await hive.refresh_peers(args.name)
    elif args.source is not None:
        rows = [await hive.peer(args.name, args.source, follow=args.follow)]
    else:
        info = await asyncio.to_thread(hive.peers, args.name)
        if args.json:
            print(json.dumps(info.as_dict(), indent=2))
        elif not info.peers and not info.peered_by:
            print(f"{args.name} reads no colony and none reads it (stem peer {args.name} --from OTHER)")
        for row in (*info.peers, *info.peered_by):
            if not args.json:
                print(row.describe())
        return 0
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        for row in rows:
            print(f"{row.describe()}: .shared/{row.source}/ in {row.colony}'s worktree")
    return 0


async def cmd_unpeer(hive: HiveAPI, args: argparse.Namespace) -> int:
    await hive.unpeer(args.name, args.source)
    print(f"{args.name} no longer reads {args.source}: .shared/{args.source}/ removed")
    return 0


async def cmd_gc(hive: HiveAPI, args: argparse.Namespace) -> int:
    report = await hive.gc()
    for line in report.removed:
        print(f"removed {line}")
    for line in report.stopped:
        print(f"stopped {line}")
    for line in report.kept:
        print(f"kept {line}")
    if not report.removed and not report.kept and not report.stopped:
        print("nothing to clean")
    return 0


COMMANDS: dict[str, Callable[[HiveAPI, argparse.Namespace], Awaitable[int]]] = {
    "spawn": cmd_spawn,
    "ls": cmd_ls,
    "exec": cmd_exec,
    "attach": cmd_attach,
    "stop": cmd_stop,
    "start": cmd_start,
    "destroy": cmd_destroy,
    "diff": cmd_diff,
    "commit": cmd_commit,
    "merge": cmd_merge,
    "sync": cmd_sync,
    "gc": cmd_gc,
    "peer": cmd_peer,
    "unpeer": cmd_unpeer,
    "logs": cmd_logs,
    "serve": cmd_serve,
}


async def _run(args: argparse.Namespace) -> int:
    hive = _hive(args)
    # SIGHUP (the SSH connection dropped) and SIGTERM end a command as Ctrl-C does: cancelled, so that what it was
    # making is undone (a spawn rolls back) instead of left half made until the next gc. Commands that handle them
    # otherwise (exec and attach forward them, serve detaches) set their own handlers over these.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    ended: list[int] = []

    def end(signum: int) -> None:
        if not ended and task is not None:
            ended.append(signum)
            task.cancel()

    for signum in (signal.SIGHUP, signal.SIGTERM):
        loop.add_signal_handler(signum, end, signum)
    try:
        return await COMMANDS[args.command](hive, args)
    except asyncio.CancelledError:
        if not ended:
            raise
        return 128 + ended[0]
    finally:
        for signum in (signal.SIGHUP, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await hive.close()
        gone = getattr(args, "gone_home", None)
        if gone is not None:
            # gc of a hive whose home was removed: what it left in the kernel is gone, and so is the hive (a home
            # made again would hold the prefix and the pool until a reboot).
            from core.claims import forget_gone

            await asyncio.to_thread(shutil.rmtree, gone, True)
            await asyncio.to_thread(forget_gone)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command `args` against the environment's hive, in an event loop of its own."""
    return asyncio.run(_run(args))
