"""Taking a colony apart: ending its processes and removing what the registry says it owns.

Shared by the Hive (stop, destroy, a rolled-back spawn) and gc (what a crash left behind), so neither reaches into
the other: gc never calls a private Hive method, and this module imports neither of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from core import cgroups, netns, peering, procs, worktree
from core.errors import PastFullDisk
from core.locations import HiveLayout
from core.registry import ColonyRecord, Registry, Resource

# What a running colony has and a stopped one has not: stop removes them, start makes them again.
RUNTIME_PARTS = ("netns", "veth", "cgroup", peering.KIND)
# How long a colony's veth may take to go with its namespace (the kernel's cleanup runs a few ms after the last
# reference goes) before it is deleted by itself.
VETH_GONE_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Teardown:
    registry: Registry
    layout: HiveLayout
    stop_grace: float

    def end_processes(self, rec: ColonyRecord) -> list[int]:
        """End every process of the colony: SIGTERM to the recorded groups (what Stem started and still runs; a
        colony host has ended its own gracefully already), then its cgroup (freeze, SIGKILL, wait until empty:
        nothing escapes by setsid, double fork or setns), then, as a fallback, anything inside its namespace that is
        not in the cgroup (a colony without one)."""
        records = self.registry.processes(rec.name)
        groups = [p.pid for p in records if procs.alive(p.pid, p.starttime)]
        # The agent's terminal is gone with its host: hung up, as a terminal that closes does (an interactive shell,
        # the usual agent, ignores SIGTERM and would hold everything up for the whole grace).
        for p in records:
            if p.kind == "agent" and p.pid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGHUP)
        if cgroups.procs(rec.netns):
            killed = procs.terminate(groups, grace=self.stop_grace) if groups else []
            killed += cgroups.end(rec.netns, timeout=self.stop_grace)
            stray = netns.pids_in(rec.netns)
            if stray:
                killed += procs.terminate([], stray, grace=self.stop_grace)
        else:
            killed = procs.terminate(groups, netns.pids_in(rec.netns), grace=self.stop_grace)
        self.registry.remove_processes([(p.pid, p.starttime) for p in records])
        return killed

    def remove_parts(
        self, name: str, keep_unmerged: bool, only: tuple[str, ...] | None = None
    ) -> tuple[str | None, int, bool]:
        """Remove what `name` owns per the registry, newest first. Returns a kept branch, its unmerged commit
        count, and whether the colony's network went (the hive's firewall table then needs a rebuild)."""
        kept: tuple[str | None, int] = (None, 0)
        network_gone = False
        parts = [res for res in reversed(self.registry.resources(name)) if only is None or res.kind in only]
        # The veth goes with its namespace: once the namespace is unmounted and empty, the kernel destroys both
        # ends, batched with every other namespace going at the same moment. A veth deleted by itself costs ~30 ms
        # of the kernel's RCU waits under the one rtnl lock, so stopping 100 colonies would wait 3 s for that alone.
        if any(res.kind == "netns" for res in parts):
            parts.sort(key=lambda res: res.kind == "veth")
        # The claims of what is gone are released together at the end (or at the first failure): one registry write
        # per colony. A stem process killed before then leaves claims of objects already gone: gc finds them gone.
        released: list[tuple[str, str]] = []
        # A part whose claim the registry refuses to release (a full disk: the peering's, released as it goes) is
        # gone all the same: the rest go too, and the refusal is raised at the end. gc finds those claims gone.
        steps = PastFullDisk()
        try:
            for res in parts:
                if res.kind == "veth" and any(p.kind == "netns" for p in parts):
                    netns.wait_link_gone(res.ident, VETH_GONE_TIMEOUT)  # deleted below if the namespace lives on
                with steps:
                    unmerged = self.remove_resource(res, keep_unmerged, released)
                    network_gone |= res.kind == "veth"
                    if unmerged:
                        kept = (res.ident.split("#", 1)[1], unmerged)
        finally:
            self.registry.release_many(released)
        steps.raise_first()
        return kept[0], kept[1], network_gone

    def remove_resource(self, res: Resource, keep_unmerged: bool, released: list[tuple[str, str]] | None = None) -> int:
        """Remove the object behind a registry claim and release the claim (or add it to `released`, for the caller
        to release with others); each object may already be gone.

        A branch with commits no other branch or tag has is kept when `keep_unmerged`: returns how many, and the
        claim stays so a later gc can delete the branch once it is merged. Otherwise returns 0.
        """
        if res.kind == "netns":
            procs.terminate([], netns.pids_in(res.ident), grace=self.stop_grace)
            netns.destroy(res.ident, "")
        elif res.kind == "veth":
            netns.delete_link(res.ident)
        elif res.kind == peering.KIND:
            peering.remove_resource(self.registry, self.layout, res)  # releases the claim under the peering lock
            return 0
        elif res.kind == "cgroup":
            if not cgroups.remove(res.ident, timeout=self.stop_grace):
                return 0  # the kernel kept it (a process stuck in it): the claim stays, so gc tries again
        elif res.kind == "worktree":
            self.remove_worktree(Path(res.ident), Path(res.extra))
        elif res.kind == "dir":
            shutil.rmtree(res.ident, ignore_errors=True)
        elif res.kind == "branch":
            repo_text, branch = res.ident.split("#", 1)
            repo = Path(repo_text)
            # One checked out now is someone else's (another hive's colony of the name, the user's checkout): the
            # claim is let go, the branch left alone.
            if repo.exists() and worktree.branch_exists(repo, branch) and worktree.checked_out(repo, branch) is None:
                unmerged = worktree.unmerged_commits(repo, branch) if keep_unmerged else 0
                if unmerged:
                    return unmerged
                worktree.delete_branch(repo, branch, self.layout.locks)
        if released is None:
            self.registry.release(res.kind, res.ident)
        else:
            released.append((res.kind, res.ident))
        return 0

    def remove_worktree(self, path: Path, repo: Path | None) -> None:
        """Through git when the repository is still there (so it forgets the worktree), else from the disk."""
        if repo is not None and (repo / ".git").exists():
            worktree.remove(repo, path, self.layout.locks)
        else:
            shutil.rmtree(path, ignore_errors=True)
