"""Getting the work back in the app, driven with Pilot against the real core: each row's ahead/behind and merge
verdict, overlap warnings between colonies, `m` merge, `c` commit and `u` sync, and the live usage and preview URLs
of the Info tab. Real git, real colonies (namespaces, worktrees, cgroups), the scripted fake agent in each."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from helpers import git, make_repo, run_stem
from textual.widgets import Input
from ui_support import FAKE_AGENT, notified, screen_text, shows, test_hive, until

from stem.app import StemApp
from stem.themes import SHIPPED_THEMES, load_themes
from stem.widgets.colonies import ColoniesList
from stem.widgets.dialogs import ConfirmScreen
from stem.widgets.logs import LogLines
from stem.widgets.merge_dialog import CommitDialog, MergeDialog
from stem.widgets.side_panels import ChangesList

pytestmark = [pytest.mark.root, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def stem_app(hive_env: Any, repo: Path, *colonies: str) -> AsyncIterator[tuple[StemApp, Any, Any]]:
    hive = test_hive(hive_env)
    app = StemApp(hive, themes=load_themes([SHIPPED_THEMES]), cwd=repo, blink=False)
    try:
        async with app.run_test(size=(160, 44)) as pilot:
            for name in colonies:
                await hive.spawn(name, repo, agent=FAKE_AGENT)
            if colonies:
                await until(pilot, lambda: shows(app, "fake-agent> "), "the fake agent's prompt")
                await until(pilot, lambda: isinstance(app.focused, ColoniesList), "the colonies list focused")
            yield app, pilot, hive
    finally:
        await hive.stop_all()
        await hive.close()


def row_text(app: StemApp, name: str) -> str:
    """The two lines of `name`'s row in the colonies list, as shown."""
    colonies = app.query_one(ColoniesList)
    for index in range(colonies.option_count):
        option = colonies.get_option_at_index(index)
        if option.id == name:
            prompt = option.prompt
            return str(prompt.plain if hasattr(prompt, "plain") else prompt)
    return ""


def changes_text(app: StemApp) -> str:
    panel = app.query_one(ChangesList)
    return "\n".join(str(getattr(panel.get_option_at_index(i).prompt, "plain", "")) for i in range(panel.option_count))


def worktree(hive: Any, name: str) -> Path:
    return Path(hive.get(name).worktree)


def commit_in(tree: Path, path: str, text: str, message: str) -> None:
    (tree / path).write_text(text)
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", message)


def tip(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


async def test_merge_through_the_m_dialog_merges_and_the_row_updates(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        commit_in(worktree(hive, "alder"), "feature.txt", "a feature\n", "add a feature")
        await until(pilot, lambda: "↑1 ✓" in row_text(app, "alder"), "alder's row: one ahead, merges clean")
        await pilot.press("m")
        dialog = await until(pilot, lambda: isinstance(app.screen, MergeDialog) and app.screen, "the merge dialog")
        assert shows(app, "Merge alder into main", "merges clean", "feature.txt", "+1 -0", "squash")
        assert shows(app, "merges clean (fast-forward)")
        await pilot.press("s")  # the summary says what a squash makes, not the fast-forward it no longer is
        await until(pilot, lambda: shows(app, "merges clean (one squash commit)"), "the squash in the summary")
        await pilot.press("s")
        await until(pilot, lambda: shows(app, "merges clean (fast-forward)"), "the fast-forward again")
        await pilot.press("y")
        confirm = await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, "the offer to destroy alder"
        )
        assert confirm is not dialog
        assert shows(app, "alder is merged into main", "Destroy alder?")
        assert tip(repo, "main") == tip(repo, "colony/alder"), "main has alder's commit"
        assert (repo / "feature.txt").read_text() == "a feature\n", "the checkout of main followed"
        await pilot.press("n")
        await until(pilot, lambda: "↑1" not in row_text(app, "alder"), "alder's row: nothing left to merge")
        assert hive.get("alder").state == "running", "declining the offer keeps the colony"


async def test_a_conflicting_colony_shows_the_count_and_the_dialog_refuses(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        commit_in(worktree(hive, "alder"), "README.md", "alder's readme\n", "alder's readme")
        commit_in(repo, "README.md", "main's readme\n", "main's readme")
        before = tip(repo, "main")
        await until(pilot, lambda: "↑1 ↓1 ✗1" in row_text(app, "alder"), "alder's row: one conflicting file")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MergeDialog), "the merge dialog")
        await until(pilot, lambda: shows(app, "conflicts: 1 file", "README.md", "nothing merged"), "the conflict")
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "conflicts with main"), "the refusal")
        assert isinstance(app.screen, MergeDialog), "the dialog stays open"
        assert tip(repo, "main") == before, "main did not move"
        assert (repo / "README.md").read_text() == "main's readme\n"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, MergeDialog), "the dialog closed")


async def test_the_merge_dialog_says_before_anything_that_the_targets_checkout_is_dirty(hive_env, repo):
    """main checked out with an uncommitted edit to a file the merge changes: the dialog says so and refuses, rather
    than showing "merges clean" and failing once the user says yes."""
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        commit_in(worktree(hive, "alder"), "README.md", "alder's readme\n", "alder's readme")
        (repo / "README.md").write_text("the user's own edit\n")
        before = tip(repo, "main")
        await until(pilot, lambda: "↑1 ✓" in row_text(app, "alder"), "alder's row: one ahead, merges clean")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MergeDialog), "the merge dialog")
        await until(pilot, lambda: shows(app, "uncommitted changes", "(README.md)"), "the dirty checkout in the dialog")
        assert "merges clean" in screen_text(app), screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "commit or stash them there"), "the refusal")
        assert isinstance(app.screen, MergeDialog), "the dialog stays open"
        assert tip(repo, "main") == before and (repo / "README.md").read_text() == "the user's own edit\n"
        await pilot.press("escape")


async def test_two_colonies_changing_one_file_are_flagged_in_both_rows_within_a_second(hive_env, repo):
    async with stem_app(hive_env, repo, "alder", "beech") as (app, pilot, hive):
        app.select_colony("alder")
        path = "dir0/file0.txt"  # five lines "file 0"
        lines = (worktree(hive, "alder") / path).read_text().splitlines(keepends=True)
        (worktree(hive, "alder") / path).write_text("".join(["alder's first line\n", *lines[1:]]))
        await until(pilot, lambda: app.changes.get("alder"), "alder's change seen")
        await until(pilot, lambda: app.live.recomputes and not app.live._running, "a recompute after it")
        assert "⚠" not in row_text(app, "alder")

        # beech changes another line of the same file: flagged in both rows, a warning the first time.
        started = time.monotonic()
        (worktree(hive, "beech") / path).write_text("".join([*lines[:4], "beech's last line\n"]))
        await until(
            pilot,
            lambda: "⚠ beech" in row_text(app, "alder") and "⚠ alder" in row_text(app, "beech"),
            "the overlap in both rows",
            timeout=1.0,
        )
        elapsed = time.monotonic() - started
        assert notified(app, "alder and beech both change dir0/file0.txt")
        await until(pilot, lambda: "⚠ also beech" in changes_text(app), "the overlap in alder's Changes panel")

        # ...then the same line: the stronger warning.
        (worktree(hive, "beech") / path).write_text("".join(["beech's first line\n", *lines[1:4], "beech\n"]))
        await until(
            pilot,
            lambda: "‼ beech" in row_text(app, "alder") and "‼ alder" in row_text(app, "beech"),
            "the same-lines overlap in both rows",
            timeout=5.0,
        )
        await until(pilot, lambda: notified(app, "change the same lines of dir0/file0.txt"), "the stronger warning")
        await until(pilot, lambda: "‼ same lines as beech" in changes_text(app), "the same lines in the Changes panel")
        assert elapsed < 1.0


async def test_c_commits_the_colony_s_work_with_the_message_asked(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        (worktree(hive, "alder") / "notes.txt").write_text("notes\n")
        await pilot.press("c")
        dialog = await until(pilot, lambda: isinstance(app.screen, CommitDialog) and app.screen, "the commit dialog")
        assert shows(app, "Commit alder's work on colony/alder", "notes.txt")
        dialog.query_one("#commit-message", Input).value = "add notes"
        await pilot.press("enter")
        await until(pilot, lambda: notified(app, "committed 1 file of alder"), "the commit's notification")
        assert git(repo, "log", "-1", "--format=%s", "colony/alder").strip() == "add notes"
        await until(pilot, lambda: "↑1 ✓" in row_text(app, "alder"), "alder's row: one commit to merge")


async def test_u_syncs_the_target_s_commits_into_the_colony_once_confirmed(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        await pilot.press("u")
        await until(pilot, lambda: notified(app, "alder is up to date with main"), "nothing to sync: no question")
        assert not isinstance(app.screen, ConfirmScreen)

        commit_in(repo, "upstream.txt", "from main\n", "main moves")
        await until(pilot, lambda: "↓1" in row_text(app, "alder"), "alder's row: one behind main")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the sync's question")
        assert shows(app, "Sync alder with main?", "This merges 1 new commit of main into colony/alder")
        assert shows(app, "No conflict with its committed work.")
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the question gone")
        assert not (worktree(hive, "alder") / "upstream.txt").exists(), "no means no sync"

        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the sync's question again")
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "synced 1 commit of main into alder"), "the sync's notification")
        assert (worktree(hive, "alder") / "upstream.txt").read_text() == "from main\n"
        await until(pilot, lambda: "↓1" not in row_text(app, "alder"), "alder's row: up to date")


async def test_u_says_which_files_a_sync_would_leave_in_conflict_before_it_changes_anything(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, hive):
        commit_in(worktree(hive, "alder"), "README.md", "alder's readme\n", "alder's readme")
        commit_in(repo, "README.md", "main's readme\n", "main's readme")
        head = tip(repo, "colony/alder")
        await until(pilot, lambda: "↓1" in row_text(app, "alder"), "alder's row: one behind main")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the sync's question")
        assert shows(app, "Conflicts foreseen in 1 file (README.md)")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the question gone")
        assert tip(repo, "colony/alder") == head
        assert (worktree(hive, "alder") / "README.md").read_text() == "alder's readme\n"


async def test_info_shows_the_colony_s_memory_and_cpu_live(hive_env, repo):
    async with stem_app(hive_env, repo, "alder") as (app, pilot, _hive):
        app.show_tab("info")
        await until(pilot, lambda: shows(app, "Resources", "memory", "cpu"), "the Resources section")
        await until(pilot, lambda: "% now" in screen_text(app), "the CPU now, after two looks", timeout=10)
        text = screen_text(app)
        assert any(unit in text for unit in ("KiB", "MiB")), "memory in use, from the cgroup"
        await until(pilot, lambda: "M " in row_text(app, "alder").split("\n")[1], "usage in alder's row")


async def test_info_shows_the_preview_url_of_a_ready_service(hive_env, tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("STEM_PREVIEW_PORT", str(port))
    toml = f'[services.web]\ncommand = "{sys.executable} -u -m http.server 3000"\nport = 3000\nready = "tcp"\n'
    repo = make_repo(tmp_path / "web", colony_toml=toml)
    async with stem_app(hive_env, repo, "alder") as (app, pilot, _hive):
        app.show_tab("info")
        url = f"http://web-alder.localhost:{port}/"
        await until(pilot, lambda: shows(app, "Preview", url), "the preview URL in Info", timeout=30)


async def test_the_palette_peers_the_selected_colony_and_info_shows_both_sides(hive_env, repo):
    async with stem_app(hive_env, repo, "alder", "beech") as (app, pilot, hive):
        (worktree(hive, "beech") / "notes.txt").write_text("beech's work\n")
        app.select_colony("alder")
        await pilot.press("colon")
        await pilot.pause()
        await pilot.press(*"Peer: alder reads beech")
        await until(pilot, lambda: shows(app, "Peer: alder reads beech"), "the command listed")
        await pilot.press("enter")
        await until(pilot, lambda: notified(app, "alder reads beech at .shared/beech/"), "the peering's notification")
        assert (worktree(hive, "alder") / ".shared" / "beech" / "notes.txt").read_text() == "beech's work\n"
        app.show_tab("info")
        await until(pilot, lambda: shows(app, "peers", "reads beech"), "alder's Info: whom it reads")
        app.select_colony("beech")
        await until(pilot, lambda: shows(app, "read by alder"), "beech's Info: who reads it")


async def test_stopping_on_a_full_disk_is_one_line_and_the_colony_runs_on(hive_env, repo):
    """`s` on a running colony when the disk under STEM_HOME is full: the notification says what to do in one line
    (not a worker's exception), and the colony is left running, not half-stopped."""
    import subprocess

    hive_env.home.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(hive_env.home)], check=True)
    filler = hive_env.home / "filler"
    try:
        async with stem_app(hive_env, repo, "full") as (app, pilot, hive):
            with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            await pilot.press("s")
            await until(pilot, lambda: notified(app, "free some space"), "the full disk's notification")
            assert not notified(app, "OperationalError") and not notified(app, "full stopped")
            assert hive.get("full").state == "running"
            filler.unlink()  # room again: the fixture's stop works
    finally:
        filler.unlink(missing_ok=True)
        subprocess.run(["umount", "-l", str(hive_env.home)], check=False)


async def test_the_logs_tab_of_a_long_log_shows_each_line_once_and_goes_on_live(hive_env, tmp_path):
    """A colony (spawned from a shell) whose service printed more lines than the log keeps, with a progress line
    redrawn in place among them, then prints on: opened in a UI, each line shows once, and the new ones follow."""
    script = (
        "import sys, time\n"
        "for i in range(6000): print('bulk', i)\n"
        "print('downloading \\r10%\\r100%')\n"
        "sys.stdout.flush()\n"
        "for i in range(1000):\n"
        "    print('slow', i, flush=True); time.sleep(0.1)\n"
    )
    repo = make_repo(tmp_path / "repo", colony_toml=f'[services.talk]\ncommand = "{sys.executable} -u talk.py"\n')
    (repo / "talk.py").write_text(script)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a talkative service")
    spawned = run_stem(hive_env.env, "spawn", "chatty", "--repo", str(repo), "--agent", "shell")
    assert spawned.returncode == 0, spawned.stderr
    hive = test_hive(hive_env)
    app = StemApp(hive, themes=load_themes([SHIPPED_THEMES]), cwd=repo, blink=False)
    try:
        async with app.run_test(size=(160, 44)) as pilot:
            await until(pilot, lambda: any(r.name == "chatty" for r in app.records), "the colony listed")
            app.select_colony("chatty")
            app.show_tab("logs")
            lines = app.query_one(LogLines)

            def texts() -> list[str]:
                return [line.plain for line in lines._lines]

            start = await until(pilot, lambda: [t for t in texts() if t.startswith("slow ")], "the slow lines")
            first = int(start[-1].split()[1])
            await until(pilot, lambda: f"slow {first + 8}" in texts(), "eight more slow lines, live", timeout=20)
            shown = texts()
            slow = [t for t in shown if t.startswith("slow ")]
            assert len(slow) == len(set(slow)), "a line shown twice"
            numbers = [int(t.split()[1]) for t in slow]
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), "a line skipped"
            assert "100%loading " in shown
            seqs = [line.seq for line in lines._lines]
            assert seqs == sorted(set(seqs))
    finally:
        await hive.stop_all()
        await hive.close()
