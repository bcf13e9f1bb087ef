"""Fixtures: every test gets its own STEM_HOME, hive prefix and address pool, and is cleaned up by name and pid."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import helpers
from helpers import link_names, make_repo, netns_names

from core import cgroups, claims, firewall, peering, procs
from core.host.forker import ForkerPaths
from core.host.launch import wait_exit
from core.host.paths import HostPaths
from core.preview import PreviewPaths
from core.warm import WarmPaths

IN_CI = os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    # The `shell` agent preset runs $SHELL: keep the developer's shell startup files out of the tests.
    os.environ["SHELL"] = "/bin/sh"
    config.addinivalue_line("markers", "root: needs root (network namespaces); fails, never skips, without it")
    for stale in Path("/usr/local/lib").glob("stem-tests-*"):  # copies of sessions that were killed
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    helpers.FAKE_AGENT_PATH = helpers.visible_fake_agent()  # before any test module imports it


def pytest_unconfigure(config: pytest.Config) -> None:
    if helpers.FAKE_AGENT_PATH.parent.name.startswith("stem-tests-"):  # the session's copy (tests/helpers.py)
        shutil.rmtree(helpers.FAKE_AGENT_PATH.parent, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.fail("this test needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces): run as root")


class HiveEnv:
    """An isolated hive for one test: its home, prefix, pool and the environment the CLI runs with."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "stem-home"
        # Made, as a user's STEM_HOME is: a command that only reads makes no hive where its home does not exist.
        self.home.mkdir(parents=True, exist_ok=True)
        self.prefix = "t" + secrets.token_hex(3)[:5]
        self.pool = free_pool()
        self.env = dict(
            os.environ,
            STEM_HOME=str(self.home),
            STEM_PREFIX=self.prefix,
            STEM_POOL=str(self.pool),
            XDG_CONFIG_HOME=str(tmp / "config"),
            STEM_PREVIEW_PORT=str(free_port()),  # the hive's own Caddy, never on a port a real hive uses
        )
        self.env.pop("STEM_FAULT_KILL_AT", None)

    def registry_pids(self) -> list[int]:
        db = self.home / "hive.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return [row[0] for row in conn.execute("SELECT pid FROM processes")]

    def host_pids(self) -> list[int]:
        """The colony hosts this test's hive started (they outlive every stem process on purpose)."""
        pids = []
        for pid_file in (self.home / "colonies").glob("*/host.pid"):
            found = HostPaths(pid_file.parent).process()
            if found is not None:
                pids.append(found[0])
        return pids

    def cleanup(self) -> None:
        """Remove whatever the test left: hosts and processes by pid, cgroups, namespaces and links by this test's
        prefix."""
        forker = ForkerPaths.of(self.home).process()
        ended = [forker[0]] if forker is not None else []
        warm = WarmPaths.of(self.home).process()
        ended += [warm[0]] if warm is not None else []
        caddy = PreviewPaths.of(self.home).process()
        ended += [caddy[0]] if caddy is not None else []
        ended += self.host_pids()
        for pid in ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in ended:
            wait_exit(pid, 5.0)  # and reaped, when this process started it (an in-process Hive's launch)
        for pid in self.registry_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for group in cgroups.names(self.prefix):  # its cgroups, and whatever still runs in them
            cgroups.remove(group, timeout=5.0)
        for name in netns_names(self.prefix):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for link in link_names(self.prefix):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for etc in Path("/etc/netns").glob(f"{self.prefix}-*"):
            shutil.rmtree(etc, ignore_errors=True)
        home = f"{self.home.resolve()}/"
        for point in sorted(peering.mount_points(), reverse=True):  # peers' read-only `.shared` mounts
            if point.startswith(home):
                peering.unmount(point)
        firewall.remove(self.prefix)  # the hive's nftables table and its hold on IP forwarding
        claims.release(self.prefix)  # its claim on the prefix and pool (core/claims.py)
        with contextlib.suppress(ValueError):
            _HANDED_OUT.remove(self.pool)
        reap_adopted()


_HANDED_OUT: list[ipaddress.IPv4Network] = []


def free_pool() -> ipaddress.IPv4Network:
    """A /20 for one test's hive that no other hive on this machine has claimed (other test sessions, a killed
    run's leftovers) and that is not the snapshot tests' fixed pool."""
    from ui_support import SNAPSHOT_POOL

    taken = [SNAPSHOT_POOL, *_HANDED_OUT, *(claim.pool for claim in claims.held())]
    while True:
        pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.{random.randrange(0, 256, 16)}.0/20")
        if not any(pool.overlaps(other) for other in taken):
            _HANDED_OUT.append(pool)  # a hive claims its pool only at its first command: not again meanwhile
            return pool


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reap_adopted() -> None:
    """Reap what this process adopted as a child subreaper (a Hive made in it earlier made it one): orphans of
    the stem commands a test killed on purpose (a git a spawn ran when it was SIGKILLed). The test is over, so
    no waiter of ours is left to want their exit status."""
    me = os.getpid()
    for pid, fields in procs.all_stats():
        if fields[0] == b"Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def hive_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = HiveEnv(tmp_path)
    # A hive made in this process (the UI's tests) starts its hosts with this process's environment: they get the
    # test's own preview port too, never the default one a real hive on this machine may hold.
    monkeypatch.setenv("STEM_PREVIEW_PORT", env.env["STEM_PREVIEW_PORT"])
    yield env
    env.cleanup()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")
