"""The Logs tab's view (stem/widgets/logs.py) in a small app, driven with Pilot: what a user reads after a burst of
lines, scrolling up, `f`, `v`, `/`, a service's own colours, history from the host, and a mouse selection.

No colony is needed: the lines are what the core would send (seq, at, source, text); tests/test_app.py runs the same
view inside real colonies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.color import Color
from textual import events
from textual.app import App, ComposeResult
from textual.containers import Vertical
from ui_support import screen_text, shows, until

from stem.hive_view import FixedClock
from stem.widgets.logs import LogLines, LogsView, line_text, plain_text

pytestmark = pytest.mark.anyio

STEM_TCSS = Path(__file__).resolve().parents[1] / "stem" / "stem.tcss"
SIZE = (80, 16)  # a border, the status line, 13 log rows (12 while searching), a border


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True, slots=True)
class Line:
    seq: int
    at: float
    source: str
    text: str


class LogsApp(App[None]):
    """The view inside a bordered panel, as in the main view, with Stem's stylesheet."""

    CSS_PATH = STEM_TCSS
    CSS = "#panel { border: round $primary; }"

    def compose(self) -> ComposeResult:
        with Vertical(id="panel"):
            yield LogsView(FixedClock(), id="logs")

    def on_mount(self) -> None:
        self.query_one(LogLines).focus()


def lines(count: int, source: str = "web", start: int = 1, text: str = "line {n}") -> list[Line]:
    return [Line(n, 0.0, source, text.format(n=n)) for n in range(start, start + count)]


def rows(app: App[None]) -> list[str]:
    """The log rows on screen (the lines widget's region but its scrollbars), trailing spaces removed."""
    region = app.query_one(LogLines).scrollable_content_region
    screen = screen_text(app).splitlines()
    return [line[region.x : region.right].rstrip() for line in screen[region.y : region.bottom]]


def colours(app: App[None], y: int) -> dict[str, Color | None]:
    """The colour of each piece of text in log row `y` as the screen draws it."""
    strip = app.screen._compositor.render_strips()[app.query_one(LogLines).region.y + y]
    return {segment.text: segment.style.color if segment.style else None for segment in strip}


def ansi(app: App[None], number: int) -> Color:
    """What the app draws for ANSI colour `number` (Textual maps them to its ANSI theme)."""
    return Color.from_triplet(app.ansi_theme.ansi_colors[number])


def row(n: int, source: str = "web", text: str = "line {n}") -> str:
    return f"00:00:00 {source:>8} {text.format(n=n)}"


def view(app: App[None]) -> LogsView:
    return app.query_one(LogsView)


async def test_a_burst_of_ten_thousand_lines_ends_with_the_last_in_view():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show("alpha", lines(5))
        for entry in lines(10_000, start=6):
            logs.add(entry)
        await until(pilot, lambda: rows(app)[-1] == row(10_005), "the last line at the bottom")
        assert rows(app) == [row(n) for n in range(9_993, 10_006)]
        assert shows(app, "following (f)")


async def test_a_steady_flood_repaints_the_followed_view_at_most_ten_times_a_second():
    """A service printing in many small bursts (a busy dev server): the followed view is brought up to date at most
    tenth of a second, not once per burst, and the last line still shows at the bottom soon after the flood ends."""
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show("alpha", lines(5))
        await until(pilot, lambda: row(5) in rows(app), "the first lines")
        widget = app.query_one(LogLines)
        synced = 0
        sync = widget._sync

        def counted(**kwargs: object) -> None:
            nonlocal synced
            synced += 1
            sync(**kwargs)  # type: ignore[arg-type]

        widget._sync = counted  # type: ignore[method-assign]
        start = time.monotonic()
        n = 5
        for _ in range(100):  # a burst of 20 lines every ~5 ms, the loop free between bursts
            for entry in lines(20, start=n + 1):
                logs.add(entry)
            n += 20
            await asyncio.sleep(0.005)
        took = time.monotonic() - start
        await until(pilot, lambda: rows(app)[-1] == row(n), "the last line at the bottom")
        assert synced <= took * 10 + 3, f"{synced} repaints in {took:.2f} s"


async def test_scrolling_up_stops_following_until_f():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show("alpha", lines(100))
        await until(pilot, lambda: rows(app)[-1] == row(100), "the end of the log")
        await pilot.press("k", "k", "k")
        await until(pilot, lambda: shows(app, "paused (f)"), "scrolling up to pause")
        before = rows(app)
        assert before[-1] == row(97)
        for entry in lines(50, start=101):
            logs.add(entry)
        await pilot.pause()
        assert rows(app) == before  # what the user reads stays put
        await pilot.press("f")
        await until(pilot, lambda: rows(app)[-1] == row(150), "f to go back to the end")
        assert shows(app, "following (f)")
        logs.add(Line(151, 0.0, "web", "line 151"))
        await until(pilot, lambda: rows(app)[-1] == row(151), "new lines followed again")

        # The mouse wheel too (Pilot has no public wheel).
        await pilot._post_mouse_events([events.MouseScrollUp], app.query_one(LogLines), offset=(10, 5))
        await until(pilot, lambda: shows(app, "paused (f)"), "the wheel to pause")
        assert rows(app)[-1] != row(151)


async def test_search_highlights_matches_and_jumps_to_the_next_from_where_the_user_was():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show(
            "alpha", [Line(n, 0.0, "web", f"line {n}" + (" Needle" if n % 10 == 0 else "")) for n in range(1, 301)]
        )
        await pilot.press("f", "home")
        await until(pilot, lambda: rows(app)[0] == row(1), "the top of the log")
        await pilot.press(*"jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj")  # line 36 at the top
        await until(pilot, lambda: rows(app)[0] == row(36), "line 36 at the top")

        await pilot.press("slash", *"need")
        await until(pilot, lambda: shows(app, "search need: 30 lines"), "the count of matching lines")
        assert rows(app)[0] == row(40, text="line {n} Needle")  # the first match after line 36
        assert rows(app)[11] == row(150, text="line {n} Needle")
        strip = app.screen._compositor.render_strips()[app.query_one(LogLines).region.y]
        marked = [segment.text for segment in strip if segment.style and segment.style.bold]
        assert marked == ["Need"]

        await pilot.press("enter", "escape")
        await until(pilot, lambda: shows(app, "/ search"), "escape to clear the search")
        assert rows(app)[0] == row(40, text="line {n} Needle")  # still where the search left it


async def test_v_filters_by_source_and_the_count_follows_new_lines():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show(
            "alpha",
            [Line(1, 0.0, "setup", "apple"), Line(2, 0.0, "build", "banana"), Line(3, 0.0, "web!", "cherry")],
        )
        every = [row(0, "setup", "apple"), row(0, "build", "banana"), row(0, "web", "cherry")]
        await until(pilot, lambda: rows(app)[:3] == every, "every line")
        await pilot.press("v")
        await until(pilot, lambda: shows(app, "source build (v)"), "the build filter")
        assert rows(app)[:2] == [row(0, "build", "banana"), ""]
        await pilot.press("v", "v")
        await until(pilot, lambda: shows(app, "source web (v)"), "the web filter")
        assert rows(app)[:2] == [row(0, "web", "cherry"), ""]  # its stderr too
        logs.add(Line(4, 0.0, "setup", "date"))
        logs.add(Line(5, 0.0, "web", "elder"))
        await until(pilot, lambda: rows(app)[:3] == [row(0, "web", "cherry"), row(0, "web", "elder"), ""], "web")

        await pilot.press("slash", "e")
        await until(pilot, lambda: shows(app, "search e: 2 lines"), "the web lines with an e")
        logs.add(Line(6, 0.0, "web", "fed"))
        logs.add(Line(7, 0.0, "setup", "eel"))
        await until(pilot, lambda: shows(app, "search e: 3 lines"), "the count to follow the new lines")
        await pilot.press("escape")
        await until(pilot, lambda: shows(app, "/ search"), "escape to clear the search")

        await pilot.press("v")
        await until(pilot, lambda: shows(app, "all sources (v)"), "back to all sources")
        assert rows(app)[:8] == [
            *every,
            row(0, "setup", "date"),
            row(0, "web", "elder"),
            row(0, "web", "fed"),
            row(0, "setup", "eel"),
            "",
        ]


async def test_a_services_own_colours_show_without_stray_characters():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        view(app).show(
            "alpha",
            [
                Line(1, 0.0, "web", "\x1b[32mGET /\x1b[0m 200 \x1b[1;31m12ms\x1b[0m"),
                Line(2, 0.0, "web!", "\x1b[33mwarning\x1b[0m: slow\ttab"),
                Line(3, 0.0, "build", "10%\r\x1b[2K100% done\x07"),
            ],
        )
        await until(pilot, lambda: "GET /" in screen_text(app), "the coloured line")
        screen = screen_text(app).splitlines()
        # The whole row, border included: an escape sequence left in it moved the right border 7 columns left.
        assert screen[2] == "│" + row(0, "web", "GET / 200 12ms").ljust(SIZE[0] - 2) + "│"
        assert screen[3] == "│" + row(0, "web", "warning: slow   tab").ljust(SIZE[0] - 2) + "│"
        assert screen[4] == "│" + row(0, "build", "100% done").ljust(SIZE[0] - 2) + "│"
        first, second = colours(app, 0), colours(app, 1)
        assert first["GET /"] == ansi(app, 2)
        assert first["12ms"] == ansi(app, 1)
        assert first[" 200 "] not in (ansi(app, 1), ansi(app, 2))
        assert second["warning"] == ansi(app, 3)  # the service's colour wins over the stderr colour
        assert second[": slow   tab"] == second["     web "]  # the rest in the stderr colour


async def test_history_joins_before_the_live_lines_once():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        logs.show("alpha", lines(5, start=101))
        logs.add(Line(106, 0.0, "web", "line 106"))
        logs.load_history("beta", lines(3))  # an answer for a colony no longer shown
        logs.load_history("alpha", [*lines(104, source="setup"), Line(104, 0.0, "web", "line 104")])
        await until(pilot, lambda: rows(app)[-1] == row(106), "the history and the live lines")
        assert rows(app) == [row(n, "setup") for n in range(94, 101)] + [row(n) for n in range(101, 107)]
        assert logs.last_seq == 106
        assert shows(app, "all sources (v)")
        await pilot.press("v", "v")
        await until(pilot, lambda: shows(app, "source web (v)"), "the sources of the history in the filter")

        # Paused, the line at the top stays there when more history arrives.
        await pilot.press("v", "k")
        await until(pilot, lambda: shows(app, "paused"), "paused")
        top = rows(app)[0]
        logs.load_history("alpha", lines(10, source="older", start=-20))
        await pilot.pause()
        assert rows(app)[0] == top


async def test_trimming_the_oldest_lines_keeps_a_paused_view_in_place():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        app.query_one(LogLines).max_lines = 100
        logs.show("alpha", lines(100))
        await pilot.press("k")
        await until(pilot, lambda: shows(app, "paused"), "paused")
        before = rows(app)
        for entry in lines(60, start=101):
            logs.add(entry)
        await pilot.pause()
        assert app.query_one(LogLines).line_count <= 112
        assert rows(app) == before
        await pilot.press("f")
        await until(pilot, lambda: rows(app)[-1] == row(160), "the end")


async def test_selecting_with_the_mouse_copies_the_rows():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        view(app).show("alpha", lines(3))
        await until(pilot, lambda: rows(app)[2] == row(3), "the lines")
        log_lines = app.query_one(LogLines)
        await pilot.mouse_down(log_lines, offset=(9, 0))
        await pilot.hover(log_lines, offset=(20, 1))
        await pilot.mouse_up(log_lines, offset=(20, 1))
        assert app.screen.get_selected_text() == "     web line 1\n00:00:00      web lin"


async def test_long_lines_scroll_sideways_with_keys_the_help_lists_and_another_colony_starts_at_the_left():
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        long = "x" * 60 + " the end of a long line"
        logs.show("alpha", lines(3, text=long + " {n}"))
        await until(pilot, lambda: last_row(app).startswith(row(3, text="xxx")), "alpha's lines")
        assert "the end" not in last_row(app)  # cut at the view's edge
        # `?` lists the keys that have an id and words: the sideways scroll is among them, in its own words.
        active = {key: b.binding for key, b in app.screen.active_bindings.items() if b.binding.id}
        assert (active["left"].id, active["left"].description) == ("logs.scroll_left", "scroll left")
        assert (active["right"].id, active["right"].description) == ("logs.scroll_right", "scroll right")
        await pilot.press(*["right"] * 40)
        await until(pilot, lambda: last_row(app).endswith("the end of a long line 3"), "the end of the line")
        logs.show("alpha", lines(4, text=long + " {n}"))  # the same colony read again keeps the place
        await until(pilot, lambda: last_row(app).endswith("the end of a long line 4"), "the same place")
        logs.show("beta", lines(2, source="api", text=long + " {n}"))
        await until(pilot, lambda: last_row(app).startswith(row(2, source="api", text="xxx")), "beta from the left")
        assert app.query_one(LogLines).scroll_x == 0


def last_row(app: App[None]) -> str:
    return [text for text in rows(app) if text][-1]


async def test_a_flood_of_one_source_leaves_the_others_last_lines_in_an_open_view():
    """The view keeps its last lines only (here 100), but each source's last lines (here 5) stay: a quiet
    service's URL line is still there, under `v`, after another service printed past the view's bound."""
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        logs = view(app)
        log_lines = app.query_one(LogLines)
        log_lines.max_lines, log_lines.keep_per_source = 100, 5
        logs.show("alpha", [*lines(7, source="vite", text="Local: http://localhost:5173/ {n}")])
        for entry in lines(1000, start=8):
            logs.add(entry)
        await until(pilot, lambda: last_row(app) == row(1007), "the flood's last line")
        assert log_lines.line_count <= 112 + 5
        await pilot.press("v")
        await until(pilot, lambda: shows(app, "source vite"), "vite's lines alone")
        assert [text for text in rows(app) if text] == [
            row(n, source="vite", text="Local: http://localhost:5173/ {n}") for n in range(3, 8)
        ]
        await pilot.press("v", "v")
        await until(pilot, lambda: shows(app, "all sources"), "every source again")
        assert last_row(app) == row(1007)


async def test_a_line_coloured_by_its_service_has_the_text_its_parse_would_give():
    """Coloured lines are parsed when first drawn, their text (search, width, copy) is taken at once without the
    parse: the two must agree, or search and the sideways scroll would go by other text than is shown."""
    samples = [
        "\x1b[32mINFO\x1b[0m request 1 GET /api 200",
        "\x1b[1;31mERROR\x1b[m: disk \x1b[4mfull\x1b[24m",
        "\x1b[38;5;208mwarn\x1b[0m 中文 wide",
        "plain with \x1b[0m reset only",
        "\x1b[38;2;10;20;30mtrue colour\x1b[0m",
        "tab\x1b[0m\tafter",  # a tab: the parse tells
        "\x1b]8;;http://x\x07link\x1b]8;;\x07 text",  # OSC 8: the parse tells
        "progress 10%\rprogress 100%",  # CR: the parse tells
        "\x1b[2Kerased first",  # another CSI: the parse tells
        "lone \x1b escape",
        "\x1b[38:2::1:2:3mcolons\x1b[0m",
    ]
    for raw in samples:
        parsed = line_text(raw)
        shown = parsed if isinstance(parsed, str) else parsed.plain
        fast = plain_text(raw)
        assert fast is None or fast == shown, (raw, fast, shown)
    assert plain_text(samples[0]) == "INFO request 1 GET /api 200"
    app = LogsApp()
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(LogsView).show("alder", [Line(i + 1, 0.0, "web", raw) for i, raw in enumerate(samples)])
        await until(pilot, lambda: rows(app)[0] == row(1, text="INFO request 1 GET /api 200"), "the first line")
        assert rows(app)[1] == row(2, text="ERROR: disk full")
        assert colours(app, 0)["INFO"] == ansi(app, 2)
