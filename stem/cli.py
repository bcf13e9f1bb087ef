"""The `stem` command line: headless control of the hive. Errors a user can cause print one line and exit 2.

This module parses and dispatches; the commands live in `stem.subcommands`, imported (with asyncio and the
orchestration core) only by a command that needs them: a plain `stem ls` reads the registry without either.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import sys
import time

from core.errors import StemError, disk_trouble, sqlite_error

TYPE_CHECKING = False  # typing's own costs every command ~2 ms of start-up; mypy reads this name as typing's
if TYPE_CHECKING:
    from core.listing import Listed

EXIT_USAGE = 2


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
        elif row.stopped_host is not None:  # what it wrote last is not what runs now
            summary, agent = f"its host is stopped: kill -CONT {row.stopped_host}", "?"
        else:
            summary = " ".join(f"{k}:{v}" for k, v in row.services.items()) or "-"
        table.append((r.name, state, agent or "-", summary, r.ip, r.branch, _age(now - r.created_at), r.repo))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())


def _quick_ls() -> int | None:
    """A plain `stem ls` without the orchestration core: the same checks of the hive, then the registry. None when
    a running colony's host is down, or a colony (or a merge) was left mid-way by a stem process that died: reviving
    it, or finishing that, is the core's job (`stem.subcommands.cmd_ls`); and when STEM_HOME does not exist."""
    from core.listing import listing, open_hive, pool_from_environment
    from core.locations import stem_home
    from core.settings import load_settings

    if not stem_home().is_dir():
        return None  # no hive here, and none is to be made for a listing (`stem.subcommands._NoHive` says so)
    settings = load_settings()
    hive = open_hive(pool=pool_from_environment(settings), settings=settings)
    try:
        listed = listing(hive.layout, hive.registry)
    finally:
        hive.registry.close()
    if any(row.orphaned or row.interrupted for row in listed) or any(hive.layout.locks.glob("follow-*.json")):
        return None  # ...or a merge killed before its target's checkout followed it (core.merge.finish_follows)
    print_listing(listed)
    return 0


def _warm_up() -> None:
    """This command ran cold: if the hive's colonies run, start its warm process (stem/warm.py) for the next `stem`,
    as a UI's first frame does, so that a shell user who never opens the UI runs warm from the second command on."""
    from stem import warm_client

    if warm_client.SERVING or os.environ.get("STEM_WARM") == "0":
        return
    from pathlib import Path

    from core.home import home_text
    from stem.warm import warm_up

    try:
        warm_up(Path(home_text()), dict(os.environ))
    except OSError:
        pass  # an optimisation: the command itself succeeded


def main(argv: list[str] | None = None, *, warm: bool = True) -> int:
    """`stem ARGV` (default: this process's arguments). `warm`: run it forked by the hive's warm process if one
    runs (stem/warm.py); its children run what they are given here (warm=False). Ctrl-C ends it with 130 and no
    traceback, also before the command has begun (a Ctrl-C at once)."""
    try:
        return _main(argv, warm)
    except KeyboardInterrupt:
        return interrupted()


def interrupted() -> int:
    """The exit status of a command Ctrl-C ended, once nothing more is to be printed on the way out: what the
    interrupt left half made (an event loop it landed in the making of, a coroutine never started) would complain
    from its finalizer as it is dropped, a traceback after the user's own ^C."""
    import warnings

    sys.unraisablehook = lambda _unraisable: None
    warnings.simplefilter("ignore")
    return 130


def _main(argv: list[str] | None, warm: bool) -> int:
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
    # client does not build the parser). A plain `stem ls` too: with the client this light, a fork that has the
    # listing's modules imported (~50 ms) beats importing them here (~100 ms).
    if warm and argv is None:
        from stem.warm_client import run_warm

        code = run_warm(given)  # no arguments: the UI, forked ready to draw
        if code is not None:
            # The command ran in the warm process's child, on this process's descriptors: nothing of this process
            # needs tearing down, and its interpreter's finalization (a few ms, more with import hooks installed, as
            # an editable install's) would only hold the shell's prompt back.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    from stem.parser import build_parser

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
        if warm and argv is None:
            _warm_up()
        return code
    except StemError as exc:
        print(f"stem: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:
        # The reader went away (`stem ls | head`): what it did not read is nobody's error. Later writes (the
        # interpreter's last flush) go nowhere instead of printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, sqlite_error()) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EIO and _terminal_gone(sys.stdout.fileno()):
            # The terminal hung up (an SSH drop, then SIGHUP): nobody is left to read an error either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        line = disk_trouble(exc)
        if line is None:
            raise
        print(f"stem: {line}", file=sys.stderr)
        return EXIT_USAGE


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
