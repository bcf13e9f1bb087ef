"""The command palette (`:` or ctrl+p): every action that makes sense now, and theme switching with live preview."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from stem.app import StemApp

__all__ = ["StemCommands", "ThemeCommands"]

Command = tuple[str, Callable[[], object], str]


class StemCommands(Provider):
    """Actions on the hive and on the selected colony, read from the app's state when the palette opens."""

    def _commands(self) -> Iterator[Command]:
        app: StemApp = self.app  # type: ignore[assignment]
        yield ("New colony", app.action_new_colony, "spawn a colony: name, repository, base, agent, task")
        selected = app.selected_record()
        if selected is not None:
            name = selected.name
            if selected.state == "running":
                yield (f"Stop {name}", app.action_stop_start, "end its processes, keep its worktree and database")
            elif selected.state in ("stopped", "failed"):
                yield (f"Start {name}", app.action_stop_start, "bring its network, services and agent back")
            yield (f"Destroy {name}", app.action_destroy, "remove it (asks first, says what is lost)")
            yield (f"Merge {name}", app.action_merge, "into its target: files, +/-, conflicts, squash (asks first)")
            yield (f"Commit {name}", app.action_commit, "its uncommitted work, on its branch (asks the message)")
            yield (f"Sync {name}", app.action_sync, "merge its target's new commits into its worktree")
            yield ("Diff against the target", app.action_toggle_diff_target, "or against the spawn's base (toggle)")
            yield (f"Terminal of {name}", partial(app.open_terminal, name), "focus its agent's terminal")
            for rec in app.records:
                if rec.name != name:
                    yield (
                        f"Peer: {name} reads {rec.name}",
                        partial(app.peer_selected, rec.name),
                        f"a filtered read-only snapshot of {rec.name}'s worktree at .shared/{rec.name}/",
                    )
            yield (f"Refresh {name}'s peer snapshots", partial(app.peer_selected, None), "copies what changed")
            service = app.selected_service()
            if service:
                yield (f"Restart service {service} of {name}", app.action_restart_service, "stop and start it")
        for rec in app.records:
            if selected is None or rec.name != selected.name:
                yield (f"Select {rec.name}", partial(app.select_colony, rec.name), f"{rec.state} · {rec.branch}")
        if any(r.state == "running" for r in app.records):
            yield ("Stop all colonies", app.action_stop_all, "end every running colony's agent and services (asks)")
        for tab in ("terminal", "logs", "diff", "info"):
            yield (f"Show {tab.title()} tab", partial(app.show_tab, tab), "the main view")
        yield ("Theme…", app.action_pick_theme, "switch the colour theme, previewed as you move")
        yield ("Keys", app.action_help, "every key active here, with its binding id")
        yield ("Quit", app.action_quit, "leave Stem; colonies keep running")

    async def discover(self) -> Hits:
        for title, callback, help_text in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)


class ThemeCommands(Provider):
    """Every registered theme; the app previews the highlighted one and keeps it only when chosen."""

    def _themes(self) -> list[str]:
        return sorted(self.app.available_themes)

    def _choose(self, name: str) -> None:
        app: StemApp = self.app  # type: ignore[assignment]
        app.choose_theme(name)

    async def discover(self) -> Hits:
        for name in self._themes():
            yield DiscoveryHit(name, partial(self._choose, name), text=name)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name in self._themes():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._choose, name), text=name)
