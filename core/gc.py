"""`stem gc`: reconcile the registry with the kernel and the disk after crashes.

Spawns claim every object in the registry *before* making it, so an object that exists but is unclaimed when gc
looks at it was left behind by someone who died. gc checks each object's claim after listing it, never from an
earlier snapshot, so a spawn running at the same time is never harmed. Colonies whose lock another process
holds are busy and left alone.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core import cgroups, claims, firewall, netns, pids, procs, worktree
from core import lifecycle as lc
from core.errors import StemError
from core.locks import file_lock, holder, remove_unused
from core.names import netns_pattern, veth_pattern
from core.provision import RUNTIME_PARTS
from core.words import plural

if TYPE_CHECKING:
    from core.hive import Hive
    from core.registry import ColonyRecord


@dataclass(slots=True)
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # running colonies that could not run on (their netns gone)


def collect(hive: Hive) -> GcReport:
    report = GcReport()
    with file_lock(hive.layout.locks / "gc.lock"):
        _colonies(hive, report)
        report.removed += finish_merges(hive)
        _orphan_resources(hive, report)
        report.removed += hive.peering.collect()  # peerings of gone colonies, snapshot mounts nobody claims
        _orphan_processes(hive, report)
        _kernel(hive, report)
        _firewall(hive, report)
        _preview(hive, report)
        _forker(hive, report)  # after Caddy, which it may have adopted: see Hive._retire_forker
        _disk(hive, report)
        _registry(hive, report)
    claims.forget_gone()  # other hives' business, not this one's report: a gone hive's claim is a file in /run
    procs.reap_orphans()
    return report


def _colonies(hive: Hive, report: GcReport) -> None:
    reg = hive.registry
    for listed in reg.colonies():
        with file_lock(hive.layout.colony_lock(listed.name), blocking=False) as got:
            if not got:
                report.kept.append(f"colony {listed.name}: busy, {_holder_text(hive, listed.name)}")
                continue
            rec = reg.find(listed.name)
            if rec is None:
                continue
            line = finish_interrupted(hive, rec)
            if line is None and not Path(rec.worktree).exists():
                hive.end_processes(rec)
                branch, _ = hive.remove_parts(rec.name, keep_unmerged=True)
                reg.delete_colony(rec.name)
                if branch:
                    reg.claim(f"~{rec.name}", "branch", f"{rec.repo}#{branch}", extra=rec.repo)
                line = f"colony {rec.name}: its worktree {rec.worktree} vanished; removed the rest"
            elif line is None and rec.state == lc.RUNNING and not netns.exists(rec.netns):
                why = "its network namespace vanished"
                hive.end_processes(rec)
                hive.remove_parts(rec.name, keep_unmerged=True, only=RUNTIME_PARTS)
                hive.set_state(rec.name, lc.STOPPED, rec.state, why)
                report.stopped.append(f"colony {rec.name}: {why} (stem start brings it back)")
            if line is not None:
                report.removed.append(line)


def _holder_text(hive: Hive, name: str) -> str:
    """Who holds the colony's lock, and how to let it go on if it is stopped (ctrl+z: it holds it for good)."""
    pid = holder(hive.layout.colony_lock(name))
    if pid is None:
        return "another stem command holds it"
    said = f"pid {pid} ({pids.command_text(pid)}) holds it"
    return f"{said}, and is stopped: kill -CONT {pid} lets it finish" if pids.stopped(pid) else said


def finish_merges(hive: Hive) -> list[str]:
    """Checkouts that a merge killed after it moved their branch never brought along (core.merge.finish_follows)."""
    if not any(hive.layout.locks.glob("follow-*.json")):
        return []
    from core.merge import finish_follows

    return finish_follows(hive.layout.locks)


def finish_interrupted(hive: Hive, rec: ColonyRecord) -> str | None:
    """Finish what a stem process that died left a colony in the middle of (the caller holds the colony's lock, so
    nobody is doing it now): a destroy is finished, a spawn that never got the colony up is rolled back, any other
    step (a start, a build, a stop) leaves it stopped. What was done, or None if the colony was at rest (or its
    worktree is gone: gc's to handle)."""
    if rec.state in lc.IN_FLIGHT:
        # Its host, if it runs, goes first: killed before it was asked to stop (or frozen, SIGSTOP), it would outlive
        # the colony's end, and a later start would take it, stale, for the colony's host (reported running, its
        # services dead and its network gone).
        from core.host import launch

        launch.kill(hive.host_paths(rec.name))
    if rec.state == lc.DESTROYING:
        done = hive.finish_destroy(rec.name)
        kept = f"; kept its branch {done.kept_branch} ({done.unmerged} unmerged)" if done.kept_branch else ""
        return f"colony {rec.name}: its destroy was interrupted; finished it{kept}"
    if rec.state not in lc.IN_FLIGHT:
        return None
    reg = hive.registry
    if not any(t.state in (lc.RUNNING, lc.STOPPED) for t in reg.transitions(rec.name)):
        hive.end_processes(rec)
        hive.remove_parts(rec.name, keep_unmerged=False)
        reg.delete_colony(rec.name)
        hive.retire_preview(rec.name)
        return f"colony {rec.name}: spawn was interrupted while {rec.state}; rolled back"
    if not Path(rec.worktree).exists():
        return None
    why = f"{rec.state} was interrupted"
    hive.end_processes(rec)
    hive.remove_parts(rec.name, keep_unmerged=True, only=RUNTIME_PARTS)
    hive.set_state(rec.name, lc.STOPPED, rec.state, why)
    hive.retire_preview(rec.name)  # a batch stop leaves the routes to its end, which a stop killed never reached
    return f"colony {rec.name}: {why}; now stopped (stem start brings it back)"


def _orphan_resources(hive: Hive, report: GcReport) -> None:
    reg = hive.registry
    names = {c.name for c in reg.colonies()}
    for res in reg.resources():
        if res.colony in names:
            continue
        if res.kind == "branch":
            repo, branch = res.ident.split("#", 1)
            there = Path(repo).exists() and worktree.branch_exists(Path(repo), branch)
            holder = worktree.checked_out(Path(repo), branch) if there else None
        try:
            unmerged = hive.teardown.remove_resource(res, keep_unmerged=True)
        except StemError as exc:  # one that cannot go is said; the rest is still collected
            report.kept.append(f"{res.kind} {res.ident} (left by {res.colony}): {exc}")
            continue
        if res.kind != "branch":
            report.removed.append(f"{res.kind} {res.ident} (left by {res.colony})")
        elif unmerged:
            report.kept.append(f"branch {branch} in {repo}: {plural(unmerged, 'unmerged commit')}")
        elif holder is not None:
            report.kept.append(f"branch {branch} in {repo}: checked out at {holder} now, not Stem's; forgotten")
        elif not there:
            report.removed.append(f"branch {branch} in {repo}: gone already; forgotten")
        else:
            report.removed.append(f"branch {branch} in {repo} (merged)")


def _orphan_processes(hive: Hive, report: GcReport) -> None:
    reg = hive.registry
    names = {c.name for c in reg.colonies()}
    for p in reg.processes():
        if procs.alive(p.pid, p.starttime):
            if p.colony in names:
                continue
            procs.terminate([p.pid], grace=hive.stop_grace)
            report.removed.append(f"process {p.pid} ({' '.join(p.argv)[:60]}) of vanished colony {p.colony}")
        reg.remove_process(p.pid, p.starttime)


def _kernel(hive: Hive, report: GcReport) -> None:
    reg = hive.registry
    ns_re, veth_re = netns_pattern(hive.prefix), veth_pattern(hive.prefix)
    for name in netns.list_namespaces():
        if ns_re.match(name) and not reg.owns("netns", name):
            procs.terminate([], netns.pids_in(name), grace=hive.stop_grace)
            netns.destroy(name, "")
            report.removed.append(f"network namespace {name} (not in the registry)")
    for name in netns.etc_dirs():
        if ns_re.match(name) and not reg.owns("netns", name) and not netns.exists(name):
            netns.destroy(name, "")  # what `ip netns del` by hand leaves: /etc/netns/<name>/resolv.conf
            report.removed.append(f"/etc/netns/{name} (not in the registry)")
    for link in netns.list_links():
        if veth_re.match(link) and not reg.owns("veth", link):
            netns.delete_link(link)
            report.removed.append(f"interface {link} (not in the registry)")
    for name in cgroups.names(hive.prefix):
        if not reg.owns("cgroup", name):
            if cgroups.remove(name, timeout=hive.stop_grace):
                report.removed.append(f"cgroup {name} and what ran in it (not in the registry)")
            else:
                report.kept.append(f"cgroup {name}: the kernel would not remove it (a process stuck in it)")


def _firewall(hive: Hive, report: GcReport) -> None:
    """The hive's nftables table matches the colonies whose network is up; with none, it and the hold on IP
    forwarding go."""
    had = firewall.table_exists(hive.prefix) or firewall.holds_forwarding(hive.prefix)
    try:
        hive.sync_firewall()
    except firewall.FirewallError as exc:
        report.kept.append(f"nftables table ip {firewall.table_name(hive.prefix)}: {exc}")
        return
    if had and not firewall.table_exists(hive.prefix):
        report.removed.append(f"nftables table ip {firewall.table_name(hive.prefix)} (no colony needs it)")


def _forker(hive: Hive, report: GcReport) -> None:
    """The hive's host forker and warm UI process go when no colony host runs (they would exit by themselves a
    little later)."""
    from core import warm
    from core.host import forker

    if hive.any_host_running():
        return
    if forker.stop(hive.layout.home):
        report.removed.append("the host forker (no colony host runs)")
    if warm.stop(hive.layout.home):
        report.removed.append("the warm UI process (no colony host runs)")


def _preview(hive: Hive, report: GcReport) -> None:
    """The hive's Caddy goes when no colony host runs; while one does, routes of colonies without a host go."""
    from core import preview

    home = hive.layout.home
    if not preview.PreviewPaths.of(home).running():
        return

    if not hive.any_host_running():
        if preview.stop(home, unless=hive.any_host_running):
            report.removed.append("the preview proxy (caddy; no colony host runs)")
        return
    running = hive.hosted()
    try:
        gone = preview.remove_routes(home, lambda route: route.colony not in running)
    except OSError as exc:
        report.kept.append(f"preview routes: the preview proxy does not answer: {exc}")
        return
    report.removed += [f"preview route {route.host} ({route.colony} has no running host)" for route in gone]


def _registry(hive: Hive, report: GcReport) -> None:
    """Rows of colonies that are gone (a host's last write racing a destroy), and their lock files."""
    gone = hive.registry.forget_orphans()
    if gone:
        report.removed.append(f"{plural(gone, 'registry row')} of colonies that no longer exist")
    names = {c.name for c in hive.registry.colonies()}
    stale = 0
    for path in hive.layout.locks.glob("colony-*.lock"):
        if path.name[len("colony-") : -len(".lock")] not in names and remove_unused(path):
            stale += 1
    if stale:
        report.removed.append(f"{plural(stale, 'lock file')} of colonies that no longer exist")


def _disk(hive: Hive, report: GcReport) -> None:
    reg = hive.registry
    for path in sorted(hive.layout.worktrees.iterdir()):
        if not reg.owns("worktree", str(path)):
            hive.teardown.remove_worktree(path, worktree.repo_of_worktree(path))
            report.removed.append(f"worktree {path} (not in the registry)")
    for path in sorted(hive.layout.colonies.iterdir()):
        if not reg.owns("dir", str(path)):
            shutil.rmtree(path, ignore_errors=True)
            report.removed.append(f"colony folder {path} (not in the registry)")
