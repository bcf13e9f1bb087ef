"""The Textual app driven with Pilot as a user would: real colonies (namespaces, worktrees), the scripted fake
agent in each, keys pressed, and what the screen shows checked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.widgets import Input
from ui_support import FAKE_AGENT, notified, screen_text, shows, test_hive, until

from core.procs import alive
from core.settings import Settings, load_settings
from stem.app import StemApp
from stem.hive_view import Clock
from stem.themes import SHIPPED_THEMES, load_themes
from stem.widgets import spawn_form
from stem.widgets.colonies import ColoniesList
from stem.widgets.dialogs import ConfirmScreen, HelpScreen
from stem.widgets.info import InfoView
from stem.widgets.logs import LogLines
from stem.widgets.main_view import MainView, TerminalPane
from stem.widgets.spawn_form import SpawnForm
from stem.widgets.terminal import TerminalView

pytestmark = [pytest.mark.root, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def stem_app(
    hive_env: Any,
    repo: Path,
    *colonies: str,
    settings: Settings | None = None,
    size: tuple[int, int] = (140, 40),
    clock: Clock | None = None,
) -> AsyncIterator[tuple[StemApp, Any, Any]]:
    """The app on a fresh hive with `colonies` spawned (running the fake agent); everything ends with the test."""
    hive = test_hive(hive_env)
    app = StemApp(hive, settings, themes=load_themes([SHIPPED_THEMES]), cwd=repo, blink=False, clock=clock)
    try:
        async with app.run_test(size=size) as pilot:
            for name in colonies:
                await hive.spawn(name, repo, agent=FAKE_AGENT)
            if colonies:
                await until(pilot, lambda: shows(app, "fake-agent> "), "the fake agent's prompt")
            yield app, pilot, hive
    finally:
        await hive.stop_all()  # colonies outlive the UI: end them, hosts included
        await hive.close()


def info_facts(app: StemApp) -> str:
    """The Info tab's text with each value that goes on under itself (a long path) joined back into one line."""
    return str(app.query_one(InfoView).body.content).replace("\n" + " " * 13, "")


def listed(app: StemApp) -> list[str]:
    colonies = app.query_one(ColoniesList)
    return [str(colonies.get_option_at_index(i).id) for i in range(colonies.option_count)]


def state_of(hive: Any, name: str) -> str | None:
    found = hive.registry.find(name)
    return found.state if found else None


async def fill_form(pilot: Any, app: StemApp, **values: str) -> SpawnForm:
    await pilot.press("n")
    form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the spawn form")
    for key, value in values.items():
        form.query_one(f"#spawn-{key}", Input).value = value
    await pilot.pause()
    return form


# ------------------------------------------------------------------------------------------------ first screen


async def test_an_empty_hive_says_how_to_spawn_and_from_where(hive_env, repo):
    async with stem_app(hive_env, repo) as (app, pilot, _hive):
        await until(pilot, lambda: shows(app, "Welcome to Stem", "Press  n  to spawn", str(repo)), "the welcome")
        assert "n new" in screen_text(app)


async def test_outside_a_repository_the_welcome_says_the_form_will_ask(hive_env, tmp_path):
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    async with stem_app(hive_env, plain) as (app, pilot, _hive):
        await until(pilot, lambda: shows(app, "is not a git repository"), "the note about the directory")


# ------------------------------------------------------------------------------------------------------ spawn


async def test_spawn_from_the_form_shows_the_colony_and_its_agent(hive_env, repo, monkeypatch):
    # The form's check (git, in a thread) is held until the test has typed: a slow disk or a big repository.
    checked = threading.Event()
    check = spawn_form.validate

    def slow_validate(*args: Any, **kwargs: Any) -> Any:
        checked.wait(30)
        return check(*args, **kwargs)

    monkeypatch.setattr(spawn_form, "validate", slow_validate)
    async with stem_app(hive_env, repo) as (app, pilot, hive):
        form = await fill_form(pilot, app, agent=FAKE_AGENT + " --task {task}", task="fix the login page")
        name = form.query_one("#spawn-name", Input).value
        assert name == "alder", "the form suggests a free name"
        assert form.query_one("#spawn-repo", Input).value == str(repo)
        # Typed at once, while the form still checks its fields and the colony is still being made: the keys are
        # for the agent (on the colony list `s` would be stop), and none is lost.
        await pilot.press("ctrl+s", "s", "t", "o", "p", "enter")
        checked.set()
        await until(pilot, lambda: state_of(hive, "alder") == "running", "alder to run", timeout=30)
        await until(pilot, lambda: "alder" in listed(app), "alder in the list")
        await until(pilot, lambda: shows(app, "fake-agent> ", "task: fix the login page"), "alder's agent")
        await until(pilot, lambda: shows(app, "echo: stop"), "the keys typed early, echoed by the agent")
        assert not isinstance(app.screen, SpawnForm)
        assert isinstance(app.focused, TerminalView)
        assert state_of(hive, "alder") == "running"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Bad_Name", "is not a DNS label"),
        ("name", "", "colony name is empty"),
        ("name", "taken", "already exists"),
        ("repo", "/nonexistent/place", "is not a directory"),
        ("repo", "NOT_A_REPO", "is not inside a git repository"),
        ("base", "no-such-branch", "does not name a commit"),
        ("agent", 'broken "quote', "cannot split"),
    ],
)
async def test_the_form_shows_each_error_under_its_field(hive_env, repo, tmp_path, field, value, message):
    if value == "NOT_A_REPO":
        value = str(tmp_path / "plain")
        Path(value).mkdir()
    colonies = ("taken",) if value == "taken" else ()
    async with stem_app(hive_env, repo, *colonies) as (app, pilot, hive):
        before = [r.name for r in hive.colonies()]
        form = await fill_form(pilot, app, **{field: value, "agent": FAKE_AGENT if field != "agent" else value})
        await pilot.press("ctrl+s")
        await until(pilot, lambda: field in form.shown_errors(), f"an error under {field}")
        assert message in form.shown_errors()[field]
        assert set(form.shown_errors()) == {field}, f"other fields complain too: {form.shown_errors()}"
        assert shows(app, *message.split()), screen_text(app)
        assert isinstance(app.screen, SpawnForm), "the form closed on an error"
        assert [r.name for r in hive.colonies()] == before, "something was spawned"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SpawnForm), "escape to close the form")


async def test_a_failed_spawn_is_a_notification_naming_the_stage(hive_env, tmp_path):
    from helpers import make_repo

    broken = make_repo(tmp_path / "broken", colony_toml='[colony]\nsetup = ["echo oh no; exit 3"]\n')
    async with stem_app(hive_env, broken) as (app, pilot, hive):
        await fill_form(pilot, app, name="doomed", agent=FAKE_AGENT)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: notified(app, "failed while provisioning"), "the failure notification", timeout=30)
        assert app.is_running
        assert hive.registry.find("doomed") is None, "the failed colony was not rolled back"
        assert any("exited with 3" in message for _, message in app.errors["doomed"])

        # Nothing of it exists, yet it stays listed (selected) until dismissed, with why in Info and its output in
        # Logs: a toast alone is gone before it is read.
        await until(pilot, lambda: "doomed" in listed(app) and app.selected == "doomed", "the failed entry")
        assert shows(app, "failed: provisioning", "spawn rolled back"), screen_text(app)
        assert shows(app, "spawn failed while provisioning and was rolled back")
        await until(pilot, lambda: shows(app, "none: the spawn failed"), "panels 2 and 3 saying why they are empty")
        await pilot.press("]", "]", "]")  # terminal → logs → diff → info
        await until(pilot, lambda: shows(app, "reason", "exited with 3", "Timeline"), "the failure in Info")
        await pilot.press("[", "[")
        await until(pilot, lambda: shows(app, "oh no"), "the setup's output in Logs")

        await pilot.press("s")  # nothing to start: says what can be done instead
        await until(pilot, lambda: notified(app, "n spawns it again, d dismisses it"), "the hint")
        await pilot.press("n")  # the form comes back filled in, to try again after a fix
        form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the form")
        assert form.value("name") == "doomed" and form.value("repo") == str(broken)
        assert form.value("agent") == FAKE_AGENT
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SpawnForm), "the form to close")

        await pilot.press("d")  # dismissed at once: there is nothing to confirm
        await until(pilot, lambda: "doomed" not in listed(app), "the entry to go")
        await until(pilot, lambda: shows(app, "Welcome to Stem"), "the empty hive's welcome again")


# --------------------------------------------------------------------------------------------------- terminal


async def test_type_into_the_agent_then_leave_with_the_chord(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        terminal = app.query_one(TerminalView)
        await pilot.press("enter")
        await until(pilot, lambda: terminal.has_focus, "enter to focus alpha's terminal")
        assert shows(app, "ctrl+]", "back to panels"), "the hint bar names the way out"
        await pilot.press(*"hello there", "enter")
        await until(pilot, lambda: shows(app, "echo: hello there"), "the agent's echo")
        # q, n, d and the panel keys are the agent's while the terminal has the focus.
        await pilot.press("q", "2", "enter")
        await until(pilot, lambda: shows(app, "echo: q2"), "q and 2 typed into the agent")
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+right_square_bracket")
        await until(pilot, lambda: app.query_one(ColoniesList).has_focus, "focus back on the colonies")
        await pilot.press("2")
        await until(pilot, lambda: app.focused is not None and app.focused.id == "services", "2 to reach panel 2")


async def test_the_terminal_follows_the_selected_colony(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha", "beta") as (app, pilot, hive):
        session = hive.agent("beta")
        await pilot.press("j")
        await until(pilot, lambda: app.query_one(TerminalView).session is session, "beta's terminal shown")
        session.write(b"colony-beta-here\r")
        await until(pilot, lambda: shows(app, "echo: colony-beta-here"), "beta's screen")


# ------------------------------------------------------------------------------------------ stop, start, destroy


async def test_stop_and_start_from_the_list(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await pilot.press("s")
        await until(pilot, lambda: state_of(hive, "alpha") == "stopped", "alpha to stop", timeout=30)
        await until(pilot, lambda: shows(app, "○", "stopped"), "alpha shown stopped")
        await until(pilot, lambda: shows(app, "alpha is stopped: no agent runs"), "the terminal tab says why")
        await pilot.press("s")
        await until(pilot, lambda: state_of(hive, "alpha") == "running", "alpha to run again", timeout=30)
        await until(pilot, lambda: shows(app, "fake-agent> "), "the agent back")


async def test_destroy_asks_naming_what_is_lost_and_cancel_keeps_it(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        rec = hive.get("alpha")
        (Path(rec.worktree) / "notes.txt").write_text("unsaved thoughts\n")
        await pilot.press("d")
        dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, "the confirmation")
        assert shows(app, "Destroy alpha?")
        text = dialog.body.plain  # long paths wrap on screen
        assert rec.worktree in text and rec.ip in text and rec.db_path in text
        assert "Uncommitted work is LOST: 1 file (notes.txt)" in text
        await pilot.press("n")
        await until(pilot, lambda: app.screen is not dialog, "the dialog to close")
        assert state_of(hive, "alpha") == "running"

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation again")
        await pilot.press("y")
        await until(pilot, lambda: state_of(hive, "alpha") is None, "alpha destroyed", timeout=30)
        await until(pilot, lambda: shows(app, "Welcome to Stem"), "the empty hive again")
        assert not Path(rec.worktree).exists()


async def test_destroy_warns_about_unmerged_commits_and_keeps_the_branch(hive_env, repo):
    from helpers import git

    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        rec = hive.get("alpha")
        (Path(rec.worktree) / "feature.txt").write_text("done\n")
        git(Path(rec.worktree), "add", "feature.txt")
        git(Path(rec.worktree), "commit", "-q", "-m", "feature")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        assert shows(app, "branch colony/alpha is KEPT: 1 commit not merged anywhere")
        await pilot.press("y")
        await until(pilot, lambda: state_of(hive, "alpha") is None, "alpha destroyed", timeout=30)
        await until(pilot, lambda: notified(app, "kept branch colony/alpha"), "the kept-branch notification")


# --------------------------------------------------------------------------------------------- list and tabs


async def test_filter_the_list(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha", "beta", "gamma") as (app, pilot, _hive):
        await until(pilot, lambda: listed(app) == ["alpha", "beta", "gamma"], "three colonies")
        await pilot.press("slash", "b", "e")
        await until(pilot, lambda: listed(app) == ["beta"], "the filter to leave beta")
        assert shows(app, "Colonies /be")
        # The hint bar says how the filter line ends (it showed no key of it).
        assert "enter keep the filter" in hint_bar(app) and "esc clear it" in hint_bar(app), hint_bar(app)
        await pilot.press("enter")
        await until(pilot, lambda: app.query_one(ColoniesList).has_focus, "enter to go back to the list")
        assert app.selected == "beta"
        await pilot.press("slash", "escape")
        await until(pilot, lambda: listed(app) == ["alpha", "beta", "gamma"], "escape to clear the filter")


async def test_keys_on_a_list_the_filter_emptied_act_on_no_colony(hive_env, repo):
    # A filter matching nothing left the colony selected before selected, and the next refresh of the list picked
    # the first colony of the hive again, shown nowhere in the list: `s` stopped it, `d` asked to destroy it.
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await pilot.press("slash", "z", "z", "z", "enter")
        await until(pilot, lambda: listed(app) == [], "the filter to hide alpha")
        app.refresh_colonies()  # as the list's periodic refresh does
        await until(pilot, lambda: app.selected is None and shows(app, "no colony selected"), "nothing selected")
        await pilot.press("s")
        await until(pilot, lambda: notified(app, "no colony selected"), "the stop refused")
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert state_of(hive, "alpha") == "running"


async def test_tabs_logs_diff_info(hive_env, tmp_path):
    from helpers import make_repo

    repo = make_repo(tmp_path / "withsetup", colony_toml='[colony]\nsetup = ["echo installing the deps"]\n')
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        session = hive.agent("alpha")
        session.write(b"write notes.txt hello from the agent\r")
        await until(pilot, lambda: shows(app, "wrote notes.txt"), "the agent to write a file")
        await until(pilot, lambda: shows(app, "notes.txt", "+1"), "the change in panel 3", timeout=15)

        await pilot.press("right_square_bracket")
        await until(pilot, lambda: shows(app, "installing the deps", "following"), "the Logs tab")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: shows(app, "+hello from the agent"), "the Diff tab")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: shows(app, "Timeline", "provisioning"), "Info")
        assert hive.get("alpha").worktree in info_facts(app)
        await pilot.press("left_square_bracket", "left_square_bracket")
        await until(pilot, lambda: shows(app, "installing the deps"), "[ back to Logs")

        # A file chosen in panel 3 shows its own diff.
        await pilot.press("3", "j", "enter")
        await until(pilot, lambda: shows(app, "alpha: notes.txt"), "the diff of notes.txt")


async def pick_source(pilot: Any, app: StemApp, source: str) -> None:
    """Press `v` until the Logs tab shows only `source` (the hive may log sources of its own, e.g. the network)."""
    for _ in range(10):
        await pilot.press("v")
        await pilot.pause()
        if shows(app, f"source {source} (v)"):
            return
    raise AssertionError(f"v never picked the source {source}")


async def test_logs_follow_filter_and_search(hive_env, tmp_path):
    from helpers import make_repo

    green = "printf '\\\\033[32mgreen\\\\033[0m done\\\\n'"  # a program's own colours
    toml = f'[colony]\nsetup = ["echo apple", "echo banana", "{green}"]\nbuild = ["echo cherry"]\n'
    repo = make_repo(tmp_path / "logs", colony_toml=toml)
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        await pilot.press("right_square_bracket", "0")
        await until(pilot, lambda: shows(app, "apple", "banana", "cherry"), "every line")
        # Coloured output: its escape sequences are colours, not characters that push the border out of place.
        await until(pilot, lambda: shows(app, "    setup green done  "), "the coloured line without escapes")
        row = next(line for line in screen_text(app).splitlines() if "setup green done" in line)
        assert "\x1b" not in row and len(row) == 140 and row.endswith(" │"), repr(row)
        await pick_source(pilot, app, "build")
        await until(pilot, lambda: shows(app, "cherry") and not shows(app, "apple"), "only the build lines")
        await pick_source(pilot, app, "setup")
        await until(pilot, lambda: shows(app, "apple") and not shows(app, "cherry"), "setup lines")
        await pilot.press("slash", *"nan", "enter")
        await until(pilot, lambda: shows(app, "banana", "search nan: 2 lines") and not shows(app, "apple"), "search")
        await pilot.press("f")
        await until(pilot, lambda: shows(app, "paused"), "follow off")


# ------------------------------------------------------------------------------------ palette, theme, help, keys


async def test_theme_switch_previews_and_is_saved(hive_env, repo, tmp_path):
    config = tmp_path / "config.toml"
    async with stem_app(hive_env, repo, settings=Settings(path=config)) as (app, pilot, _hive):
        app.theme = "stem-dark"
        app.action_pick_theme()
        await pilot.pause()
        await pilot.press(*"stem-light")
        await until(pilot, lambda: app.theme == "stem-light", "the highlighted theme previewed")
        await pilot.press("escape")
        await until(pilot, lambda: app.theme == "stem-dark", "escape to restore the theme")
        assert not config.exists()

        await pilot.press("colon")
        await pilot.pause()
        await pilot.press(*"Theme")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press(*"stem-light", "enter")
        await until(pilot, lambda: config.exists() and load_settings(config).theme == "stem-light", "the choice saved")
        assert app.theme == "stem-light"
        assert app.current_theme.dark is False


async def test_help_lists_the_keys_active_here_with_their_ids(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        assert shows(app, "colony.destroy", "colony.stop_start", "app.quit", "colony.filter")
        await pilot.press("escape")
        await pilot.press("3", "question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen for panel 3")
        assert shows(app, "changes.diff") and not shows(app, "colony.filter")


async def test_keys_are_remapped_from_config(hive_env, repo, tmp_path):
    settings = Settings(path=tmp_path / "config.toml", keys={"app.new": "a", "colony.destroy": "x"})
    async with stem_app(hive_env, repo, "alpha", settings=settings) as (app, pilot, _hive):
        await until(pilot, lambda: shows(app, "a new", "x destroy"), "the hint bar with the new keys")
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, SpawnForm)
        # The old key of a remapped binding does nothing anywhere: not on the list, not in another panel. Keys are
        # handled in order, so once x has asked to destroy, every d before it has had its chance to.
        asked: list[str] = []
        app._prepare_destroy = lambda rec, **_kw: asked.append(rec.name)  # type: ignore[method-assign]
        await pilot.press("1", "d", "2", "d", "3", "d", "1", "x")
        await until(pilot, lambda: asked, "x to ask to destroy")
        assert asked == ["alpha"], "d still destroys after colony.destroy was remapped to x"
        await pilot.press("2", "x")
        await until(pilot, lambda: asked == ["alpha", "alpha"], "x to destroy from panel 2 as well")
        await pilot.press("1", "a")
        await until(pilot, lambda: isinstance(app.screen, SpawnForm), "a to open the form")


async def test_a_failing_action_is_a_notification_not_a_crash(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        await pilot.press("2", "r")  # no service to restart
        await until(pilot, lambda: notified(app, "select a service first"), "the warning")
        app.action_focus_panel("colonies")
        app._colony_work("alpha", _boom(), "boom")
        await until(pilot, lambda: notified(app, "boom failed"), "the worker's failure shown")
        assert app.is_running
        await until(pilot, lambda: any("boom" in m for _, m in app.errors["alpha"]), "the error in alpha's Info")


async def _boom() -> None:
    raise RuntimeError("kaboom")


# ------------------------------------------------------------------------------------------------------- quit


async def test_quit_asks_when_colonies_run_and_says_what_happens(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        session = hive.agent("alpha")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the quit confirmation")
        assert shows(app, "1 colony is running: alpha", "It keeps running after you quit", "Stop all colonies")
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "cancel")
        assert app.is_running
        agent_pid = session.pid
        await pilot.press("q", "y")
        await until(pilot, lambda: not app.is_running, "the app to quit")
        # Quitting detaches: the agent runs on in its colony host, the colony stays running.
        assert agent_pid is not None and alive(agent_pid), "quitting must leave the agent running"
        assert state_of(hive, "alpha") == "running"


async def test_stop_all_with_one_colony_running_speaks_of_one(hive_env, repo):
    """The palette's "Stop all colonies" with one colony running names it and speaks of one: its agent, its worktree
    (it said "Stop 1 colony (alpha)? Their agents ... their worktree")."""
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        await app.action_stop_all()
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the stop confirmation")
        assert shows(app, "Stop alpha, the one", "Its agent and services", "brings it back")
        assert not shows(app, "Their")
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "cancel")
        assert state_of(_hive, "alpha") == "running"


async def test_the_quit_dialog_follows_a_colony_stopped_from_a_shell_meanwhile(hive_env, repo):
    from helpers import run_stem

    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        await pilot.press("q")
        await until(pilot, lambda: shows(app, "1 colony is running: alpha"), "the quit confirmation")
        stopped = await asyncio.to_thread(run_stem, hive_env.env, "stop", "alpha")
        assert stopped.returncode == 0, stopped.stderr
        await until(pilot, lambda: shows(app, "No colony is running any more"), "the dialog told", timeout=15)
        assert not shows(app, "1 colony is running")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the app to quit")


async def test_a_stopped_host_is_shown_with_how_to_let_it_go_on_and_its_colony_comes_back_after(hive_env, repo):
    # A host stopped by kill -STOP still holds its lock and takes connections, so nothing it says tells: its row
    # went on saying what it last wrote (idle, its services up) while its agent took no key.
    from core.host.paths import HostPaths

    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await until(pilot, lambda: hive.agent("alpha") is not None, "alpha's agent shown")
        host = HostPaths(hive_env.home / "colonies" / "alpha").process()
        assert host is not None
        os.kill(host[0], signal.SIGSTOP)
        try:
            told = f"host stopped · kill -CONT {host[0]}"
            await until(pilot, lambda: shows(app, told), "the row to say so", timeout=10)
            await until(pilot, lambda: notified(app, f"alpha's colony host (pid {host[0]}) is stopped"), "a notice")
        finally:
            os.kill(host[0], signal.SIGCONT)
        await until(pilot, lambda: not shows(app, told), "the row as before", timeout=10)
        assert hive.agent("alpha") is not None


async def test_a_host_that_does_not_answer_is_shown_so_with_what_to_do_and_its_colony_comes_back_after(
    hive_env, repo, monkeypatch
):
    # A hung host (stuck in the kernel, a loop that never yields) is not stopped, so the SIGSTOP look does not see
    # it: it takes the connection's bytes and answers nothing, and its row went on saying what it last wrote. The UI
    # asks a quiet host whether it is there; one that leaves that unanswered is said not to answer.
    from helpers import hung

    from core.host.paths import HostPaths

    monkeypatch.setattr("stem.app.HOST_SILENT", 3.0)  # 10 s in use; the same path, sooner
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await until(pilot, lambda: hive.agent("alpha") is not None, "alpha's agent shown")
        host = HostPaths(hive_env.home / "colonies" / "alpha").process()
        assert host is not None
        told = f"host not answering · pid {host[0]}"
        with hung(host[0]):
            await until(pilot, lambda: shows(app, told), "the row to say so", timeout=15)
            await until(pilot, lambda: notified(app, f"alpha's colony host (pid {host[0]}) has not answered"), "told")
            assert notified(app, "`stem stop alpha` ends it")
        await until(pilot, lambda: not shows(app, told), "the row as before", timeout=10)
        assert hive.agent("alpha") is not None and not app.stopped_hosts


async def test_quit_without_running_colonies_does_not_ask(hive_env, repo):
    async with stem_app(hive_env, repo) as (app, pilot, _hive):
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "the app to quit at once")


async def test_restart_a_service_from_panel_2(hive_env, tmp_path):
    from helpers import make_repo

    toml = f'[services.web]\ncommand = "{sys.executable} -u -m http.server 3000"\nport = 3000\nready = "tcp"\n'
    repo = make_repo(tmp_path / "web", colony_toml=toml)
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await until(pilot, lambda: shows(app, "web", "ready", ":3000", "svc 1/1"), "web ready in panels 1 and 2")
        before = hive.services("alpha")["web"].pid
        await pilot.press("2", "r")
        await until(pilot, lambda: notified(app, "alpha: restarted web (1 restart)"), "the notification", timeout=30)
        await until(pilot, lambda: hive.services("alpha")["web"].pid not in (None, before), "a new web process")
        await until(pilot, lambda: shows(app, "ready", ":3000", "↻1"), "web ready again, its restart counted")
        await pilot.press("r")  # each restart the user asks for counts, as the supervisor's own do
        await until(pilot, lambda: notified(app, "alpha: restarted web (2 restarts)"), "the count again", timeout=30)
        await until(pilot, lambda: shows(app, "ready", ":3000", "↻2"), "two restarts in panel 2")
        await pilot.press("left_square_bracket")  # from panel 2: the tabs wrap round to Info
        await until(pilot, lambda: shows(app, "http://web-alpha.localhost:"), "the preview URL in Info")


async def test_the_palette_runs_actions_on_the_selected_colony(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        await pilot.press("colon")
        await pilot.pause()
        await pilot.press(*"Stop alpha")
        await until(pilot, lambda: shows(app, "Stop alpha"), "the command listed")
        await pilot.press("enter")
        await until(pilot, lambda: state_of(hive, "alpha") == "stopped", "alpha stopped from the palette", timeout=30)


async def test_an_agent_waiting_for_the_user_is_announced(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        hive.agent("alpha").write(b"bell\r")
        await until(pilot, lambda: notified(app, "alpha's agent is waiting for you"), "the attention notification")
        await until(pilot, lambda: shows(app, "colony/alpha · attention"), "attention in panel 1")


# ---------------------------------------------------------------------------------- first-day defects (issue 14)


def hint_bar(app: StemApp) -> str:
    """The bottom line: the key hints."""
    return screen_text(app).splitlines()[-1]


async def test_the_spawn_form_takes_the_keys_typed_after_n_and_the_hint_bar_shows_its_keys(hive_env, repo):
    async with stem_app(hive_env, repo) as (app, pilot, _hive):
        await until(pilot, lambda: shows(app, "Welcome to Stem"), "the welcome")
        await pilot.press("n", *"fern")  # typed at once, as a user does: the name, in place of the suggested one
        form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the spawn form")
        await until(pilot, lambda: form.value("name") == "fern", "the keys in the name field")
        assert isinstance(app.focused, Input) and app.focused.id == "spawn-name"
        await until(pilot, lambda: "spawn" in hint_bar(app) and "cancel" in hint_bar(app), "the form's keys")
        assert "new" not in hint_bar(app) and "quit" not in hint_bar(app), hint_bar(app)
        await pilot.press("escape")
        await until(pilot, lambda: "n new" in hint_bar(app), "the list's keys back once the form is gone")


async def test_the_hint_bar_of_a_narrow_terminal_keeps_the_help_key_and_cuts_no_hint(hive_env, repo):
    # At 80 columns the bar was cut in the middle of a hint, and `? keys`, the key to all the others, was lost.
    async with stem_app(hive_env, repo, "alpha", size=(80, 24)) as (app, pilot, _hive):
        await until(pilot, lambda: "stop/start" in hint_bar(app), "the list's hints")
        bar = hint_bar(app).strip()
        assert "? keys" in bar, bar
        hints = {"? keys", "⏎ terminal", "s stop/start", "d destroy", "/ filter", "m merge", "c commit", "u sync"}
        pieces = [piece.strip() for piece in bar.split("  ") if piece.strip()]
        assert set(pieces) <= hints | {"q quit", ": commands", "n new", "1 2 3 0 panels"}, pieces


async def test_keys_read_as_the_form_closes_are_the_agent_s(hive_env, repo, monkeypatch):
    """Keys the app reads after the form is gone and before its next message: the new colony's terminal has the
    focus already, so they are the agent's, not commands on the list (`s` would stop a colony)."""
    async with stem_app(hive_env, repo) as (app, pilot, hive):
        name = (await fill_form(pilot, app, agent=FAKE_AGENT)).value("name")
        expect = TerminalView.expect

        def expecting(view: TerminalView, *args: Any, **kwargs: Any) -> None:
            expect(view, *args, **kwargs)
            for key, character in (("s", "s"), ("t", "t"), ("o", "o"), ("p", "p"), ("enter", None)):
                app.post_message(events.Key(key, character))  # read before anything the spawn queues

        monkeypatch.setattr(TerminalView, "expect", expecting)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SpawnForm), "the form gone")
        await until(pilot, lambda: state_of(hive, name) == "running", "the colony to run", timeout=30)
        await until(pilot, lambda: shows(app, "echo: stop"), "the keys, echoed by the agent")
        assert isinstance(app.focused, TerminalView)


async def test_n_opens_the_form_before_the_app_reads_the_next_key(hive_env, repo):
    """The keys after `n` are the form's whenever they come: `n` is acted on as the app reads it, not after a trip
    through the focused list's queue, which keys read later (the rest of a burst, in another chunk) could
    overtake."""
    async with stem_app(hive_env, repo, "one") as (app, pilot, _hive):
        await until(pilot, lambda: isinstance(app.focused, ColoniesList), "the list focused")
        seen: list[object] = []
        app.post_message(events.Key("n", "n"))
        app.call_later(lambda: seen.append(app.screen))  # handled right after the key, as the next key would be
        await until(pilot, lambda: seen, "the app past the key")
        assert isinstance(seen[0], SpawnForm), seen


async def test_cycling_tabs_never_types_into_the_agent(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        main = app.query_one(MainView)
        await pilot.press("right_square_bracket", "0")  # Logs, and into the main view
        await until(pilot, lambda: main.tab == "logs" and isinstance(app.focused, LogLines), "the Logs tab focused")
        # Round the tabs twice from inside the main view, past the Terminal tab each time.
        for tab in ("diff", "info", "terminal", "logs", "diff", "info", "terminal"):
            await pilot.press("right_square_bracket")
            await until(pilot, lambda tab=tab: main.tab == tab, f"] to reach {tab}")
            await pilot.pause()
            assert not isinstance(app.focused, TerminalView), f"the terminal took the focus on the way to {tab}"
        await until(pilot, lambda: isinstance(app.focused, TerminalPane), "the Terminal tab focused, not entered")
        await until(pilot, lambda: "enter terminal" in hint_bar(app), "the hint to enter it")
        await pilot.press("enter")  # entering is explicit
        await until(pilot, lambda: isinstance(app.focused, TerminalView), "enter to give the agent the keys")
        await pilot.press(*"typed", "enter")
        await until(pilot, lambda: shows(app, "echo: "), "the agent's echo")
        assert shows(app, "echo: typed"), f"keys other than the typed ones reached the agent:\n{screen_text(app)}"
        assert hive.agent("alpha") is not None


async def test_an_untracked_file_is_not_shown_as_added(hive_env, repo):
    from helpers import git

    async with stem_app(hive_env, repo, "alpha") as (app, pilot, hive):
        worktree = Path(hive.get("alpha").worktree)
        (worktree / "staged.txt").write_text("one\n")
        git(worktree, "add", "staged.txt")
        (worktree / "scratch.txt").write_text("two\n")
        await until(pilot, lambda: shows(app, "A staged.txt", "? scratch.txt"), "the two kinds apart in panel 3")


async def test_info_names_the_agent_colony_toml_chose(hive_env, tmp_path):
    from helpers import make_repo

    repo = make_repo(tmp_path / "withagent", colony_toml='[colony]\nagent = "shell"\n')
    async with stem_app(hive_env, repo) as (app, pilot, hive):
        await hive.spawn("alpha", repo)  # no --agent: colony.toml's agent
        await until(pilot, lambda: "alpha" in listed(app), "alpha listed")
        await pilot.press("left_square_bracket")  # the tabs wrap round to Info
        await until(pilot, lambda: shows(app, "agent  shell  (colony.toml)"), "the agent colony.toml chose")
        assert not shows(app, "agent  default")


class SteppedClock(Clock):
    """Real time, plus whatever the test adds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def now(self) -> float:
        return super().now() + self.ahead


async def test_ages_tick_without_rebuilding_the_list(hive_env, repo):
    clock = SteppedClock()
    async with stem_app(hive_env, repo, "alpha", clock=clock) as (app, pilot, _hive):
        # No rebuild of the list from here on: an age that moves is the timer's update of the age cells alone.
        app.query_one(ColoniesList).set_rows = lambda rows: None  # type: ignore[method-assign]
        clock.ahead = 7 * 60
        await until(pilot, lambda: shows(app, "running 7m"), "the age to move on", timeout=5)
        clock.ahead = 3 * 3600
        await until(pilot, lambda: shows(app, "running 3h"), "the age to move on again", timeout=5)


async def test_a_crash_looping_service_is_one_notification_a_minute(hive_env, tmp_path):
    """A service that crashes at every start (restarted, crashed again, ...) put one more toast up at each crash,
    without end, over the user's dialogs. One a minute now; Info still lists every crash."""
    from helpers import make_repo
    from ui_support import notifications

    from core.events import ServiceState

    async with stem_app(hive_env, make_repo(tmp_path / "repo")) as (app, pilot, _hive):
        for restarts in range(5):
            app.on_core_event(ServiceState("alpha", "crasher", "crashed", 3, restarts, "exited with 3"))
        await pilot.pause()
        told = [n.message for n in notifications(app) if "crasher crashed" in n.message]
        assert told == ["alpha: service crasher crashed (exit 3): exited with 3"], told
        assert len(app.errors["alpha"]) == 5


async def test_a_notice_shows_a_programs_own_brackets(hive_env, tmp_path):
    """A service's words in a toast are shown as they were written: nginx's `[emerg]` (and a path or a TOML table
    name in brackets) was read as markup and left out. Every notice is text, also a widget's (which asks for
    markup)."""
    from helpers import make_repo
    from textual.widgets._toast import Toast
    from ui_support import notifications

    from core.events import ServiceState

    async with stem_app(hive_env, make_repo(tmp_path / "repo")) as (app, pilot, _hive):
        detail = '[emerg] open() "/run/[x]/nginx.pid" failed [/b]'
        app.on_core_event(ServiceState("alpha", "web", "crashed", 1, 0, detail))
        app.query_one("#terminal").notify("[b]copied[/b]")
        await pilot.pause()
        told = [Toast(n).render().plain for n in notifications(app)]
        assert told == [f"alpha: service web crashed (exit 1): {detail}", "[b]copied[/b]"], told


async def test_the_help_list_scrolls_from_the_keyboard_on_a_short_terminal(hive_env, repo):
    """At 80x24 the help for the colony list has more keys than rows: the arrows and page keys scroll to the last,
    as they would in any list (nothing had the focus, and only a mouse wheel scrolled it)."""
    async with stem_app(hive_env, repo, "alpha", size=(80, 24)) as (app, pilot, _hive):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        keys = app.screen.query_one("#help-keys")
        await until(pilot, lambda: keys.max_scroll_y > 0, "a list longer than the dialog")
        last = app.screen.rows[-1][2]
        assert not shows(app, last)
        await pilot.press("end")
        await until(pilot, lambda: shows(app, last), f"the last key ({last}) scrolled into view")
        await pilot.press("pageup")
        await until(pilot, lambda: keys.scroll_y < keys.max_scroll_y, "page up to scroll back")


async def test_info_values_too_long_for_the_panel_go_on_under_themselves(hive_env, repo):
    """At 80x24 the Info panel is 40 columns: a worktree's path, too long for the room right of its label, went on
    at the panel's left edge, under the labels. It goes on under itself, cut after a slash."""
    async with stem_app(hive_env, repo, "alpha", size=(80, 24)) as (app, pilot, hive):
        await pilot.press("1", "]", "]", "]")  # terminal → logs → diff → info
        await until(pilot, lambda: shows(app, "worktree  /", "worktrees/alpha"), "the worktree in Info")
        worktree = hive.registry.find("alpha").worktree
        lines = screen_text(app).splitlines()
        at = next(i for i, line in enumerate(lines) if "worktree  /" in line)
        column = lines[at].index("worktree  /") + len("worktree  ")
        shown = lines[at][column:].split("│")[0].rstrip()
        assert worktree.startswith(shown) and len(shown) < len(worktree) and shown.endswith("/"), lines[at]
        rest = lines[at + 1][column:].split("│")[0].rstrip()
        assert lines[at + 1][:column].rstrip().endswith("│"), lines[at + 1]  # nothing under the label
        assert worktree.startswith(shown + rest), (lines[at], lines[at + 1])
