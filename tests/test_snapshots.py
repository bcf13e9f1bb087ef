"""SVG snapshots of the app (pytest-textual-snapshot): empty hive, three colonies running the fake agent, the spawn
form with an error, the Logs and Diff tabs, the help screen and the light theme. Real colonies; the scenes in
tests/scenes.py make them deterministic. Review a changed snapshot in the report before `--snapshot-update`."""

from __future__ import annotations

import pytest
from scenes import SCENES, SIZE, demo_repo, play, scene_app
from ui_support import SNAPSHOT_POOL

from core.hive import Hive

pytestmark = pytest.mark.root


@pytest.mark.parametrize("name", list(SCENES))
def test_snapshot(name, hive_env, snap_compare, tmp_path, monkeypatch):
    scene = SCENES[name]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the app shows the repository as ~/shop
    # The Logs scene shows the preview URL, port included: the default one, not the test's random free port.
    monkeypatch.setenv("STEM_PREVIEW_PORT", "8900")
    repo = demo_repo(tmp_path / "home")
    hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=SNAPSHOT_POOL, stop_grace=2.0)
    app = scene_app(hive, repo, theme=scene.theme)

    async def run_before(pilot) -> None:
        await play(scene, pilot, app, hive, repo)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
