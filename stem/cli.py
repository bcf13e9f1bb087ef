"""The `stem` command line: headless control of the hive. Errors a user can cause print one line and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from core.egress import EgressInForce
from core.errors import StemError

if TYPE_CHECKING:
    from core.api import HiveAPI
    from core.events import Event
    from core.merge import ColonyDiff, Conflict, MergeResult

EXIT_USAGE = 2
# What writes to a colony's log besides its services (`stem logs -s` takes these too).
LOG_SOURCES = ("setup", "build", "network", "host", "agent", "limits", "preview", "peering")
EXIT_CONFLICTS_LEFT = 1  # stem sync: the merge is in the colony's worktree with conflicts for its agent (as git merge)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command, like every other Stem error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


DISTRIBUTION = "stem-hive"  # the name on the package index (`stem` there is the Tor controller library)


class _Version(argparse.Action):
    """`--version`: looked up only when asked, so no other command pays for reading the package metadata."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib import metadata

        try:
            version = metadata.version(DISTRIBUTION)
        except metadata.PackageNotFoundError:
            version = "(not installed: run from a source tree)"
        print(f"stem {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stem",
        description="Run AI coding agents in parallel, each in its own colony: a network namespace, "
        "a git worktree on colony/<name>, a SQLite database, its services and its agent.",
        epilog="With no command, stem opens the terminal UI. State lives in $STEM_HOME (default $XDG_DATA_HOME/stem).",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "spawn",
        help="create a colony and bring it up",
        description="Create colony NAME: namespace, worktree on colony/NAME, SQLite file; "
        "run [colony] setup and build from colony.toml.",
    )
    p.add_argument("name", help="colony name: a DNS label, at most 32 characters")
    p.add_argument("--repo", default=".", help="git repository to branch from (default: current directory)")
    p.add_argument("--base", default="HEAD", help="ref to branch from (default: HEAD)")
    p.add_argument("--agent", help="agent preset or command")
    p.add_argument("--task", help="task text handed to the agent")

    p = sub.add_parser("ls", help="list colonies", description="List the hive's colonies.")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser(
        "exec",
        help="run a command inside a colony",
        description="Run COMMAND inside colony NAME (its namespace, worktree and environment); "
        "stdin and stdout pass through and its exit code is returned.",
    )
    p.add_argument("name")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")

    p = sub.add_parser(
        "attach",
        help="a colony's agent full-screen in this terminal",
        description="Show colony NAME's agent full-screen in this terminal, without Stem's panels (like tmux attach: "
        "the quickest way to one agent over a slow link). Keys go to the agent; ctrl+] detaches "
        "([keys] terminal.release in config.toml remaps it). The colony keeps running.",
    )
    p.add_argument("name")

    for verb, text in (
        ("stop", "end a colony's processes and take its network down"),
        ("start", "bring a stopped colony back"),
    ):
        p = sub.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("names", nargs="+", metavar="NAME")

    p = sub.add_parser(
        "destroy",
        help="remove a colony and everything it made",
        description="Remove a colony: processes, namespace, worktree, database, registry rows. "
        "A branch with unmerged commits is kept.",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="also when the worktree has uncommitted changes")

    p = sub.add_parser(
        "diff",
        help="a colony's work against its target branch",
        description="Show colony NAME's work against its target (the branch it was spawned from, or --into): "
        "committed and uncommitted changes and untracked files, from the merge base, so the target's own later "
        "commits are not shown.",
    )
    p.add_argument("name")
    p.add_argument("--stat", action="store_true", help="changed files with +/- line counts instead of the diff")
    p.add_argument("--into", metavar="BRANCH", help="compare with this branch instead of the target")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser(
        "commit",
        help="commit a colony's uncommitted work on its branch",
        description="Commit everything uncommitted in colony NAME's worktree (untracked files too, ignored ones "
        "not) on its branch, for agents that do not commit. No hook runs; the agent's git sees a normal commit.",
    )
    p.add_argument("name")
    p.add_argument("-m", "--message", required=True, help="the commit message")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser(
        "merge",
        help="merge a colony's branch into its target branch",
        description="Merge colony NAME's branch into its target (the branch it was spawned from, or --into) "
        "without touching any checkout: the merge is computed with git merge-tree, written as a commit and the "
        "branch moved by compare-and-swap. A fast-forward when possible (unless --squash). A worktree that has "
        "the target checked out follows, as git merge --ff-only would, unless it has uncommitted changes in "
        "files the merge changes (refused). A conflict changes nothing and exits 2, listing the files and lines.",
    )
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--all", action="store_true", help="every colony, in spawn order, stopping at the first that does not merge"
    )
    p.add_argument("--into", metavar="BRANCH", help="merge into this branch instead of the target")
    p.add_argument("--squash", action="store_true", help="one single-parent commit with the colony's changes")
    p.add_argument("-m", "--message", help="the commit message (default: names the colony and its branch)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser(
        "sync",
        help="merge a colony's target into its branch, in its worktree",
        description="Merge the new commits of colony NAME's target (or --from) into its branch, inside its "
        "worktree, so that a conflict is left where its agent works: conflict markers in the files, exit 1 with "
        "the files and lines. Uncommitted changes to files the merge changes refuse it (exit 2, nothing changed).",
    )
    p.add_argument("name")
    p.add_argument("--from", dest="source", metavar="BRANCH", help="merge this branch instead of the target")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    sub.add_parser(
        "serve",
        help="watch the hive without a UI: print what happens, restart colony hosts that die",
        description="Follow every running colony's host in the foreground without a UI: print state changes, "
        "notices and log lines, and replace a colony host that dies. Ctrl-C or SIGTERM detaches: the colonies "
        "keep running (their hosts do not depend on any stem process).",
    )

    p = sub.add_parser(
        "logs",
        help="show a colony's log",
        description="Show colony NAME's log: setup and build output, and its services' output, kept on disk.",
    )
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-s", "--service", help="only lines from this service (or setup, build)")
    p.add_argument("-n", "--lines", type=int, default=200, help="how many past lines (default 200)")

    p = sub.add_parser(
        "peer",
        help="let a colony read another's worktree through a read-only snapshot",
        description="Colony NAME reads colony --from's worktree at .shared/FROM/ in its own: a filtered copy "
        "(no secrets, agent or editor state, dependencies, .git or symlinks), read-only inside NAME (a read-only "
        "mount), kept out of git status. Made now if NAME runs, else when it starts. With --refresh: bring every "
        "snapshot NAME reads up to date. With neither: list NAME's peerings.",
    )
    p.add_argument("name")
    p.add_argument("--from", dest="source", metavar="OTHER", help="the colony to read")
    p.add_argument("--follow", action="store_true", help="refresh the snapshot whenever OTHER's changes settle")
    p.add_argument("--refresh", action="store_true", help="refresh every snapshot NAME reads")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser(
        "unpeer",
        help="stop a colony reading another's worktree",
        description="Colony NAME no longer reads colony --from: its snapshot .shared/FROM/ and the mount go.",
    )
    p.add_argument("name")
    p.add_argument("--from", dest="source", metavar="OTHER", required=True, help="the colony it reads")

    sub.add_parser(
        "gc",
        help="remove what crashes left behind",
        description="Find and remove namespaces, interfaces, worktrees, folders, processes and "
        "registry rows that no longer belong together.",
    )
    return parser


def _hive() -> HiveAPI:
    from core.hive import Hive

    return Hive.from_environment()


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


async def cmd_spawn(hive: HiveAPI, args: argparse.Namespace) -> int:
    rec = await hive.spawn(args.name, Path(args.repo), args.base, agent=args.agent, task=args.task)
    print(f"{rec.name}  {rec.state}  {rec.ip}  {rec.branch}  {rec.worktree}")
    return 0


async def cmd_ls(hive: HiveAPI, args: argparse.Namespace) -> int:
    await hive.revive_dead_hosts()  # a host that died (kill -9) is noticed by the next stem command
    rows = hive.colonies()
    now = time.time()
    hosted = {r.name: hive.host_running(r.name) for r in rows}

    def runtime(name: str) -> tuple[dict[str, str], str]:
        services, agent = {}, ""
        for kind, key, state, _detail in hive.runtime_states(name):
            if kind == "service":
                services[key] = state
            else:
                agent = state
        return services, agent

    if args.json:
        merging = {status.colony: status.as_dict() for status in await hive.merge_statuses()}
        preview = await asyncio.to_thread(hive.preview_urls)  # service -> URL through the preview port
        from core import sandbox

        isolation = list(sandbox.status(hive.settings.isolation))  # what is not enforced, one line each
        out = []
        for r in rows:
            services, agent = runtime(r.name)
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
                    "services": services if hosted[r.name] else {},
                    "agent": agent if hosted[r.name] else "",
                    "host": hosted[r.name],
                    "preview": preview.get(r.name, {}),
                    "isolation": isolation,
                    **hive.limits(r.name).as_dict(),  # limits in force, usage now, OOM kills and refused forks
                    **merging.get(r.name, {}),
                    **hive.peers(r.name).as_dict(),  # whom it reads (.shared/NAME/) and who reads it
                }
            )
        print(json.dumps(out, indent=2))
        return 0
    if not rows:
        print("no colonies yet: stem spawn NAME --repo PATH")
        return 0
    table = [("NAME", "STATE", "AGENT", "SERVICES", "IP", "BRANCH", "AGE", "REPO")]
    for r in rows:
        state = r.state if r.state != "failed" else f"failed ({r.stage})"
        services, agent = runtime(r.name)
        if not hosted[r.name]:
            summary, agent = ("-" if r.state != "running" else "its host is down: stem start " + r.name), "-"
        else:
            summary = " ".join(f"{k}:{v}" for k, v in services.items()) or "-"
        table.append((r.name, state, agent or "-", summary, r.ip, r.branch, _age(now - r.created_at), r.repo))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


async def cmd_exec(hive: HiveAPI, args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise StemError("stem exec: no command given (stem exec NAME -- COMMAND ...)")
    running = await hive.exec(args.name, argv)
    loop = asyncio.get_running_loop()

    def forward(sig: int) -> None:
        # The child has its own session, so the terminal's signals reach only us: pass them on.
        try:
            os.killpg(running.proc.pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        loop.add_signal_handler(sig, forward, sig)
    try:
        code: int = await asyncio.to_thread(running.proc.wait)
    finally:
        await asyncio.to_thread(hive.exec_finished, running)
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
    key, warning = release_key(hive.settings.keys.get(RELEASE_BINDING))
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
    for name in args.names:
        rec = await hive.start(name)
        print(f"{rec.name}  {rec.state}  {rec.ip}")
    return 0


async def cmd_destroy(hive: HiveAPI, args: argparse.Namespace) -> int:
    for name in args.names:
        report = await hive.destroy(name, force=args.force)
        print(f"destroyed {report.name}")
        if report.kept_branch:
            print(
                f"kept branch {report.kept_branch}: {report.unmerged} commit(s) not merged anywhere "
                f"(merge it, or drop it with git branch -D {report.kept_branch})"
            )
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
    summary = f" {len(diff.files)} file(s) changed, {added} insertion(s)(+), {removed} deletion(s)(-) {against}"
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
        print(f"committed {len(result.files)} file(s) of {result.colony} on {result.branch} as {result.commit[:12]}")
    return 0


def _conflicts(conflicts: tuple[Conflict, ...], target: str, colony: str) -> None:
    for conflict in conflicts:
        print(f"  {conflict.describe(target, colony)}", file=sys.stderr)


def _merged(result: MergeResult) -> None:
    verb = "squashed" if result.how == "squash" else "merged"
    what = {"fast-forward": "fast-forward to", "merge": "merge commit", "squash": "commit"}[result.how]
    print(
        f"{verb} {result.colony} into {result.target}: {what} {result.new[:12]} "
        f"({result.commits} commit(s), {len(result.files)} file(s))"
    )
    if result.checkout:
        print(f"  {result.checkout} has {result.target} checked out: brought to {result.new[:12]}")
    if result.retries:
        print(f"  {result.target} moved meanwhile: merged onto its new tip ({result.retries} retry)")
    _note(result.note)
    if result.uncommitted:
        _note(
            f"{result.colony} has {len(result.uncommitted)} uncommitted file(s), not part of the merge "
            f"(stem commit {result.colony} -m MESSAGE, then merge again)"
        )


async def cmd_merge(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.merge import MergeConflict

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
            f"synced {result.colony} with {result.target}: {result.commits} commit(s) brought in "
            f"({result.how}, now at {result.new[:12]})"
        )
    if not args.json:
        _note(result.note)
    if result.how != "conflicts":
        return 0
    if not args.json:
        print(
            f"stem: merging {result.target} into {result.colony} left {len(result.conflicts)} file(s) in conflict "
            "in its worktree, for its agent to resolve (then commit)",
            file=sys.stderr,
        )
        _conflicts(result.conflicts, result.target, result.colony)
    return EXIT_CONFLICTS_LEFT


async def cmd_logs(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.colony_log import follow_file, parse_line, read_tail

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

    for line in await asyncio.to_thread(read_tail, path, args.lines, wanted):
        print(line)
    if args.follow:
        sys.stdout.flush()
        async for line in follow_file(path):
            if wanted(line):
                print(line, flush=True)
    return 0


async def cmd_serve(hive: HiveAPI, args: argparse.Namespace) -> int:
    from core.events import AgentActivity, ColonyRemoved, LogLine, Notice, ServiceState, StateChanged

    events = hive.subscribe()
    await hive.attach()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"stem serve: watching {hive.home} with {len(hive.colonies())} colonies "
        "(Ctrl-C detaches; colonies keep running)",
        flush=True,
    )

    def show(event: Event) -> str | None:
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

    async def printer() -> None:
        while True:
            line = show(await events.get())
            if line:
                print(line, flush=True)

    printing = asyncio.create_task(printer())
    await stop.wait()
    await hive.detach()
    while not events.empty():
        line = show(events.get_nowait())
        if line:
            print(line, flush=True)
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
    for line in report.kept:
        print(f"kept {line}")
    if not report.removed and not report.kept:
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
    hive = _hive()
    try:
        return await COMMANDS[args.command](hive, args)
    finally:
        await hive.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            print(
                "stem: the UI needs a terminal; for scripts see `stem --help` (stem ls, stem serve, ...)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        from stem.app import run

        return run()
    try:
        code = asyncio.run(_run(args))
        sys.stdout.flush()  # here, not in the interpreter's last flush, where an error is printed, not caught
        return code
    except StemError as exc:
        print(f"stem: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`stem ls | head`): what it did not read is nobody's error. Later writes (the
        # interpreter's last flush) go nowhere instead of printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EIO and _terminal_gone(sys.stdout.fileno()):
            # The terminal hung up (an SSH drop, then SIGHUP): nobody is left to read an error either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        line = _disk_trouble(exc)
        if line is None:
            raise
        print(f"stem: {line}", file=sys.stderr)
        return EXIT_USAGE


def _terminal_gone(fd: int) -> bool:
    """Whether `fd` is a terminal that has hung up: an empty write fails with EIO there and nowhere else."""
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"")
    except OSError as exc:
        return exc.errno == errno.EIO
    return False


def _disk_trouble(exc: BaseException) -> str | None:
    """One line for what the disk refused (full, over quota, read-only), or None for anything else."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{os.strerror(exc.errno)}{where}: free some space (or point STEM_HOME elsewhere) and try again"
    text = str(exc)
    if isinstance(exc, sqlite3.Error) and ("disk is full" in text or "disk I/O error" in text or "readonly" in text):
        home = os.environ.get("STEM_HOME", "STEM_HOME")
        return f"the hive's registry in {home} cannot be written ({text}): free some space and try again"
    return None


if __name__ == "__main__":
    sys.exit(main())
