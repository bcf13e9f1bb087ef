"""Every dialog keeps its buttons in sight on a small terminal (a phone over SSH, a split tmux pane): the body
scrolls, the buttons stay at the bottom, and the keys they name still work."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App
from textual.content import Content
from textual.widgets import Button, Input
from ui_support import screen_text, until

import stem.app
from core.events import FileChange
from core.merge import ColonyDiff, MergeState, MergeStatus
from core.settings import Settings
from stem.app import StemApp
from stem.widgets.dialogs import ConfirmScreen
from stem.widgets.merge_dialog import CommitDialog, MergeDialog
from stem.widgets.spawn_form import SpawnForm

SIZES = [(60, 15), (48, 12), (120, 40)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Bare(App[None]):
    """The app's own stylesheet, without a hive."""

    CSS_PATH = Path(stem.app.__file__).parent / str(StemApp.CSS_PATH)


def _long_body() -> Content:
    return Content("\n").join(Content(f"• line {i}: what this removes, said at some length") for i in range(12))


def _diff() -> ColonyDiff:
    files = tuple(FileChange(f"src/module_{i}.py", "modified", 3, 1) for i in range(20))
    return ColonyDiff("alder", "main", "0" * 40, files, frozenset())


DIALOGS = {
    "confirm": (lambda: ConfirmScreen("Destroy alder?", _long_body(), "Destroy"), ("Destroy (y)", "Cancel (n)")),
    "commit": (lambda: CommitDialog("alder", "colony/alder", [f"f{i}.txt" for i in range(30)]), ("Commit (enter)",)),
    "merge": (
        lambda: MergeDialog("alder", _diff(), MergeStatus("alder", "main", MergeState.CLEAN, 2, 1)),
        ("Merge (y)", "Cancel (esc)"),
    ),
    "spawn": (
        lambda: SpawnForm(taken=[], repo=Path("/tmp"), settings=Settings(path=Path("/nonexistent/config.toml"))),
        ("Spawn", "Cancel"),
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", sorted(DIALOGS))
async def test_a_dialog_s_buttons_stay_on_a_small_screen(kind, size):
    make, labels = DIALOGS[kind]
    app = Bare()
    async with app.run_test(size=size) as pilot:
        app.push_screen(make())
        await until(pilot, lambda: app.screen.query(Button), "the dialog")
        await pilot.pause()
        width, height = size
        for button in app.screen.query(Button):
            region = button.region
            assert region.height and region.y >= 0 and region.bottom <= height, (kind, size, button.label, region)
            assert region.x >= 0 and region.right <= width, (kind, size, button.label, region)
        text = screen_text(app)
        for label in labels:
            assert label in text, (kind, size, label)


@pytest.mark.anyio
async def test_y_still_confirms_a_long_question_on_a_small_screen():
    app = Bare()
    answers: list[bool | None] = []
    async with app.run_test(size=(48, 12)) as pilot:
        app.push_screen(ConfirmScreen("Destroy alder?", _long_body(), "Destroy"), answers.append)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: answers, "the answer")
    assert answers == [True]


@pytest.mark.anyio
async def test_the_merge_dialog_of_one_file_is_as_tall_as_what_it_says():
    """One changed file on a tall terminal: the dialog fits its lines, not a page of empty rows above the buttons;
    twenty files on a short one still scroll with the buttons in sight (above)."""
    diff = ColonyDiff("alder", "main", "0" * 40, (FileChange("app.py", "modified", 1, 0),), frozenset())
    app = Bare()
    async with app.run_test(size=(150, 45)) as pilot:
        app.push_screen(MergeDialog("alder", diff, MergeStatus("alder", "main", MergeState.FAST_FORWARD, 1, 0)))
        await until(pilot, lambda: app.screen.query(Button), "the dialog")
        await pilot.pause()
        dialog = app.screen.query_one(".dialog").region
        assert dialog.height <= 18, dialog
        assert "app.py" in screen_text(app)


@pytest.mark.anyio
async def test_the_spawn_form_opens_at_its_top_on_a_short_terminal():
    """At 80x24 the form opened scrolled to its name field: its title, its hint line and the field's label were
    above the top, and the first thing seen was a box with no label."""
    app = Bare()
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DIALOGS["spawn"][0]())
        await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen.focused is not None, "the form")
        await pilot.pause()
        text = screen_text(app)
        assert "New colony" in text and "ctrl+s" in text and "Name" in text, text


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (60, 15)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_tab_shows_each_field_of_the_spawn_form_in_order_on_a_short_terminal(size):
    """At 80x24 Tab went from Agent to the buttons and Task came last, and the Agent field stayed under the buttons'
    row, blank: the buttons were docked inside the part that scrolls. Each field Tab reaches is the next one down,
    above the buttons, with its value on the screen."""
    app = Bare()
    async with app.run_test(size=size) as pilot:
        app.push_screen(DIALOGS["spawn"][0]())
        await until(pilot, lambda: isinstance(app.screen, SpawnForm) and app.screen.focused is not None, "the form")
        form = app.screen
        order = []
        for _ in range(7):
            await pilot.pause()
            field = form.focused
            order.append(field.id)
            buttons = form.query_one(".dialog-buttons").region
            if isinstance(field, Input):
                region = field.region
                assert region.height == 1 and region.bottom <= buttons.y, (field.id, region, buttons)
                shown = field.value or field.placeholder
                assert shown[:20] in screen_text(app), (field.id, screen_text(app))
            await pilot.press("tab")
        fields = ["spawn-name", "spawn-repo", "spawn-base", "spawn-agent", "spawn-task"]
        assert order == [*fields, "spawn-submit", "spawn-cancel"]
