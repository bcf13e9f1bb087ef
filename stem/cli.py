"""The `stem` command line: headless control of the hive. Errors a user can cause print one line and exit 2.

This module parses and dispatches; the commands live in `stem.subcommands`, imported (with asyncio and the
orchestration core) only by a command that needs them: a plain `stem ls` reads the registry without either.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from core.errors import StemError, disk_trouble

if TYPE_CHECKING:
    from core.listing import Listed

EXIT_USAGE = 2


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


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: built once per process (the warm process builds it before it forks, so that the
    commands it forks only parse)."""
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


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def print_listing(listed: list[Listed]) -> None:
    """`stem ls`'s table: a row per colony, oldest first."""
    if not listed:
        print("no colonies yet: stem spawn NAME --repo PATH")
        return
    now = time.time()
    table = [("NAME", "STATE", "AGENT", "SERVICES", "IP", "BRANCH", "AGE", "REPO")]
    for row in listed:
        r = row.rec
        state = r.state if r.state != "failed" else f"failed ({r.stage})"
        agent = row.agent
        if not row.hosted:
            summary, agent = ("-" if r.state != "running" else "its host is down: stem start " + r.name), "-"
        else:
            summary = " ".join(f"{k}:{v}" for k, v in row.services.items()) or "-"
        table.append((r.name, state, agent or "-", summary, r.ip, r.branch, _age(now - r.created_at), r.repo))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())


def _quick_ls() -> int | None:
    """A plain `stem ls` without the orchestration core: the same checks of the hive, then the registry. None when
    a running colony's host is down: reviving it is the core's job (`stem.subcommands.cmd_ls`)."""
    from core.listing import listing, open_hive, pool_from_environment
    from core.settings import load_settings

    settings = load_settings()
    hive = open_hive(pool=pool_from_environment(settings), settings=settings)
    try:
        listed = listing(hive.layout, hive.registry)
    finally:
        hive.registry.close()
    if any(row.orphaned for row in listed):
        return None
    print_listing(listed)
    return 0


def main(argv: list[str] | None = None, *, warm: bool = True) -> int:
    """`stem ARGV` (default: this process's arguments). `warm`: run it forked by the hive's warm process if one
    runs (stem/warm.py); its children run what they are given here (warm=False)."""
    given = sys.argv[1:] if argv is None else argv
    for arg in given:
        if not arg.isascii():
            try:
                arg.encode()
            except UnicodeEncodeError:  # bytes the locale could not decode: no name, path or command of Stem's
                print(f"stem: argument {arg!r} is not valid UTF-8", file=sys.stderr)
                return EXIT_USAGE
    if not given and not _on_terminal():
        return EXIT_USAGE
    # As the program: forked, nothing to import, by the warm process, which parses the arguments itself (so the
    # client does not build the parser). A plain `stem ls` stays here: it is lighter than a fork.
    quick_ls = given[:1] == ["ls"] and "--json" not in given
    if warm and argv is None and not quick_ls:
        from stem.warm_client import run_warm

        code = run_warm(given)  # no arguments: the UI, forked ready to draw
        if code is not None:
            return code
    args = build_parser().parse_args(given)
    if args.command is None:
        if not _on_terminal():
            return EXIT_USAGE
        # Importing the UI makes half a million objects that live as long as the process: with the collector off
        # meanwhile no collection walks them (~30 ms of a cold start), and frozen after it none ever will.
        gc.disable()
        from stem.app import run

        gc.freeze()
        gc.enable()
        return run()
    quick_ls = args.command == "ls" and not args.json
    try:
        code = _quick_ls() if quick_ls else None
        if code is None:
            from stem.subcommands import run_command

            code = run_command(args)
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
    except (OSError, _sqlite_error()) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EIO and _terminal_gone(sys.stdout.fileno()):
            # The terminal hung up (an SSH drop, then SIGHUP): nobody is left to read an error either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        line = disk_trouble(exc)
        if line is None:
            raise
        print(f"stem: {line}", file=sys.stderr)
        return EXIT_USAGE


def _sqlite_error() -> type[Exception]:
    """sqlite3.Error if a command imported sqlite3 (none but the registry's users do: the warm client does not)."""
    module = sys.modules.get("sqlite3")
    return module.Error if module is not None else OSError


def _on_terminal() -> bool:
    """Whether the UI can run here; if not, says so."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return True
    print("stem: the UI needs a terminal; for scripts see `stem --help` (stem ls, stem serve, ...)", file=sys.stderr)
    return False


def _terminal_gone(fd: int) -> bool:
    """Whether `fd` is a terminal that has hung up: an empty write fails with EIO there and nowhere else."""
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"")
    except OSError as exc:
        return exc.errno == errno.EIO
    return False


if __name__ == "__main__":
    sys.exit(main())
