"""Scenes of the app for the SVG snapshots (tests/test_snapshots.py) and the README's screenshots
(scripts/make_screenshots.py): the same states, made deterministic.

Determinism: a fixed clock (ages, log times and the timeline show one time), no cursor blink, fixed colony names,
a fixed address pool, a repository at a fixed path with fixed content, and every colony left to settle (agent
idle at its prompt, services ready) before the picture is taken.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import make_repo
from ui_support import FAKE_AGENT, until

from core.hive import Hive
from core.settings import Settings
from stem.app import StemApp
from stem.hive_view import FixedClock
from stem.themes import SHIPPED_THEMES, load_themes
from stem.widgets.spawn_form import SpawnForm
from stem.widgets.terminal import TerminalView

SIZE = (140, 40)
DEMO_TOML = f"""\
[colony]
setup = ["echo installing dependencies", "echo 42 packages installed"]
build = ["echo building the site", "echo built in 0.4s"]

[services.web]
command = "{sys.executable} -u -m http.server 3000"
port = 3000
ready = "tcp"
"""
README_AFTER = "# shop\n\nA small web shop.\n\n## Login\n\nUsers sign in with a magic link.\n"

Step = Callable[[Any, StemApp, Hive], Awaitable[None]]


def demo_repo(home: Path) -> Path:
    """The repository every scene branches from, with fixed content, at `~/shop` of a throwaway home: the caller
    points HOME at `home`, so the app shows the path as `~/shop` whatever folder the run got."""
    return make_repo(home / "shop", files=3, colony_toml=DEMO_TOML)


def scene_app(hive: Hive, repo: Path, theme: str = "stem-dark") -> StemApp:
    settings = Settings(path=Path("/dev/null"), theme=theme)
    return StemApp(
        hive,
        settings,
        themes=load_themes([SHIPPED_THEMES]),
        clock=FixedClock(),
        cwd=repo,
        blink=False,
        close_hive=True,
        live_figures=False,  # usage and preview routes vary run to run
    )


async def settle(pilot: Any, app: StemApp, hive: Hive, names: tuple[str, ...]) -> None:
    """Wait until every colony's services are ready and its agent sits idle at its prompt."""

    def settled() -> bool:
        for name in names:
            session = hive.agent(name)
            if session is None or not any("fake-agent> " in row for row in session.screen.text()):
                return False
            if any(getattr(r, "state", "") != "ready" for r in hive.services(name).values()):
                return False
            if app.activity.get(name) != "idle":
                return False
        return True

    await until(pilot, settled, f"{', '.join(names)} to settle", timeout=40)
    await until(pilot, lambda: not app._notifications, "notifications to clear", timeout=15)
    await pilot.pause()


async def spawn_all(pilot: Any, app: StemApp, hive: Hive, names: tuple[str, ...], repo: Path) -> None:
    for name in names:
        await hive.spawn(name, repo, agent=FAKE_AGENT)
    await until(pilot, lambda: [r.name for r in app.records] == list(names), "the colonies listed")
    for name in names:
        # The agent may have printed `resized:` or not, depending on whether the resize beat its start: clear
        # its screen once it runs at its final size, so every picture starts from the same prompt.
        session = await until(pilot, lambda n=name: hive.agent(n), f"{name}'s agent")
        await until(pilot, lambda s=session: any("fake-agent> " in row for row in s.screen.text()), "a prompt")
        if name == names[0]:
            terminal = app.query_one(TerminalView)
            await until(
                pilot,
                lambda s=session, t=terminal: s.screen.columns == t.scrollable_content_region.width,
                "the shown agent to get the terminal's size",
            )
        session.write(b"clear\r")
        await until(pilot, lambda s=session: s.screen.text()[0].startswith("fake-agent> "), "a cleared screen")
    await settle(pilot, app, hive, names)


async def type_help(pilot: Any, app: StemApp, hive: Hive) -> None:
    session = hive.agent("alpha")
    assert session is not None
    session.write(b"help\r")
    await until(pilot, lambda: any("exit N" in row for row in session.screen.text()), "alpha's help")
    await settle(pilot, app, hive, ("alpha", "beta", "gamma"))


async def spawn_form_error(pilot: Any, app: StemApp, hive: Hive) -> None:
    await pilot.press("n")
    form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the form")
    from textual.widgets import Input

    form.query_one("#spawn-name", Input).value = "Fix_Login"
    form.query_one("#spawn-task", Input).value = "make the login page accept magic links"
    await until(pilot, lambda: "name" in form.shown_errors(), "the name error")
    await pilot.pause()


async def logs_tab(pilot: Any, app: StemApp, hive: Hive) -> None:
    await pilot.press("right_square_bracket", "0")
    await until(pilot, lambda: app.query_one("#logs").last_seq > 0, "log lines")
    await pilot.pause()


async def diff_tab(pilot: Any, app: StemApp, hive: Hive) -> None:
    worktree = Path(hive.get("alpha").worktree)
    (worktree / "README.md").write_text(README_AFTER)
    (worktree / "dir1" / "file1.txt").write_text("file 1\n" * 3 + "file one, edited by the agent\n")
    await until(pilot, lambda: len(app.changes.get("alpha", ())) == 2, "the changes", timeout=20)
    await pilot.press("right_square_bracket", "right_square_bracket")
    await until(pilot, lambda: app.query_one("#diff").text.count("diff --git") == 2, "the diff")
    await pilot.pause()


async def help_screen(pilot: Any, app: StemApp, hive: Hive) -> None:
    await pilot.press("question_mark")
    await pilot.pause()


@dataclass(frozen=True)
class Scene:
    name: str
    colonies: tuple[str, ...] = ()
    steps: tuple[Step, ...] = field(default_factory=tuple)
    theme: str = "stem-dark"
    description: str = ""


THREE = ("alpha", "beta", "gamma")
SCENES = {
    scene.name: scene
    for scene in (
        Scene("empty", description="An empty hive: how to spawn the first colony"),
        Scene("colonies", THREE, (type_help,), description="Three colonies, alpha's agent in the terminal"),
        Scene("spawn-error", ("alpha",), (spawn_form_error,), description="The spawn form with an error"),
        Scene("logs", ("alpha",), (logs_tab,), description="The Logs tab: setup, build and service output"),
        Scene("diff", ("alpha",), (diff_tab,), description="The Diff tab: the colony against its base"),
        Scene("help", ("alpha",), (help_screen,), description="`?`: the keys active here, with binding ids"),
        Scene("light", THREE, (type_help,), theme="stem-light", description="The light theme"),
    )
}


async def play(scene: Scene, pilot: Any, app: StemApp, hive: Hive, repo: Path) -> None:
    await until(pilot, lambda: app._loaded, "the app to load the hive")
    await spawn_all(pilot, app, hive, scene.colonies, repo)
    for step in scene.steps:
        await step(pilot, app, hive)
