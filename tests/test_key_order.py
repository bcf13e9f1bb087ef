"""Keys typed in one burst act in the order they were typed: what a fast typist, a paste of keys through tmux or an
SSH link that delivers a stalled second of typing at once sends. Each burst is posted to the app in one go, as the
terminal's reader does with the keys of one read (`pilot.press` waits for the app between keys, which hid this)."""

from __future__ import annotations

from typing import Any

import pytest
from test_app import stem_app
from textual import events
from textual.command import CommandPalette
from textual.widgets import Input
from ui_support import shows, until

from stem.app import StemApp
from stem.widgets.colonies import ColoniesList
from stem.widgets.dialogs import ConfirmScreen
from stem.widgets.spawn_form import SpawnForm

pytestmark = pytest.mark.anyio

_CHARACTERS = {
    "enter": "\r",
    "escape": "\x1b",
    "tab": "\t",
    "backspace": "\x7f",
    "ctrl+u": "\x15",
    "space": " ",
    "slash": "/",
    "colon": ":",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def burst(app: StemApp, *keys: str) -> None:
    """`keys` as the terminal's reader posts the keys of one read: all at once, before the app has taken any."""
    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else _CHARACTERS.get(key)))


def typed(text: str) -> list[str]:
    return ["space" if c == " " else c for c in text]


def modal_open(app: StemApp) -> bool:
    return isinstance(app.screen, (ConfirmScreen, SpawnForm, CommandPalette))


async def test_text_typed_right_after_the_filter_key_goes_into_the_filter(hive_env: Any, repo: Any) -> None:
    # `/gam` typed at once opened the filter line and then the merge dialog: the `m` reached the list's merge key
    # before the filter line had the focus. And enter then `j` typed `j` into the filter it had just closed.
    async with stem_app(hive_env, repo, "alpha", "gamma") as (app, pilot, _hive):
        box = app.query_one("#colony-filter", Input)
        burst(app, "slash", "g", "a", "m")
        await until(pilot, lambda: box.value == "gam", "the filter to read gam")
        burst(app, "enter", "j")
        await until(pilot, lambda: app.query_one(ColoniesList).has_focus, "enter to go back to the list")
        await pilot.pause()
        assert box.value == "gam"
        assert not modal_open(app), app.screen


async def test_keys_typed_as_a_dialog_opens_are_its_keys(hive_env: Any, repo: Any) -> None:
    # The keys typed after `:` were lost while the palette opened; enter after the search ran the first command of
    # the list before it; `n` then a name typed over the suggested one lost the first letters (ctrl+u ran after
    # them), and `d` then `n` left the destroy dialog open.
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        burst(app, "colon", *typed("stop"))
        palette = await until(pilot, lambda: isinstance(app.screen, CommandPalette) and app.screen, "the palette")
        await until(pilot, lambda: palette.query_one(Input).value == "stop", "the palette to read stop")
        # Enter right after the search text acts on that text's results, not on the list shown before them (whose
        # first command, New colony, it ran).
        burst(app, *typed(" all"), "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the stop-all question")
        assert shows(app, "Stop all colonies?"), app.screen
        burst(app, "escape", "n", "ctrl+u", *typed("fix-it"), "tab", "end", "x", "backspace", "backspace")
        form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the spawn form")
        name = form.query_one("#spawn-name", Input)
        await until(pilot, lambda: name.value == "fix-it", "the name typed over the suggested one")
        repo_field = form.query_one("#spawn-repo", Input)
        await until(pilot, lambda: repo_field.has_focus, "tab to move to the repository")
        await until(pilot, lambda: repo_field.value == str(repo)[:-1], "two backspaces to take x and one more")
        burst(app, "escape", "d", "n")
        await until(pilot, lambda: not modal_open(app), "the destroy dialog to be answered no")
        await pilot.pause()
        assert not modal_open(app), app.screen


async def test_editing_keys_act_where_they_were_typed_in_a_field(hive_env: Any, repo: Any) -> None:
    # Backspace and the cursor keys ran after all the text of their burst: `abc`, backspace, `d` gave `abc`.
    async with stem_app(hive_env, repo) as (app, pilot, _hive):
        burst(app, "n", "ctrl+u", "a", "b", "c", "backspace", "d", "left", "left", "x")
        form = await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen, "the spawn form")
        name = form.query_one("#spawn-name", Input)
        await until(pilot, lambda: name.value == "axbd", "the name to read axbd", timeout=5)


async def test_text_typed_right_after_enter_on_a_colony_is_its_agents(hive_env: Any, repo: Any) -> None:
    # enter opens the colony's terminal a frame later: the first letters typed after it went to the list.
    async with stem_app(hive_env, repo, "alpha") as (app, pilot, _hive):
        burst(app, "enter", *typed("hello agent"), "enter")
        await until(pilot, lambda: shows(app, "echo: hello agent"), "the agent to echo the whole line")
        burst(app, "ctrl+right_square_bracket", "slash", "a")
        await until(pilot, lambda: app.query_one("#colony-filter", Input).value == "a", "the filter to read a")
