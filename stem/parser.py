"""The `stem` command line's parser (argparse), apart from stem.cli so that a command forked warm, which only
parses, and the warm client, which does not, never import argparse at start-up: the warm process builds it once
before it forks."""

from __future__ import annotations

import argparse
import functools
from typing import NoReturn

from stem.cli import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command, like every other Stem error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """A count of lines: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of lines (0 or more)")
    return value


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
        "stdin and stdout pass through (from a terminal, on a PTY of its own, as ssh and docker exec -it give one) "
        "and its exit code is returned.",
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
    p.add_argument("-n", "--lines", type=_count, default=200, help="how many past lines (default 200)")

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
