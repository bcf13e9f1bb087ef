"""The changes panel on binary files: `binary`, not `+0 -0`, and one both colonies change is a binary overlap."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app import stem_app
from ui_support import screen_text, shows, until

pytestmark = [pytest.mark.root, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_binary_file_two_colonies_change_reads_binary_in_the_changes_panel(hive_env, repo):
    async with stem_app(hive_env, repo, "alpha", "beta") as (app, pilot, hive):
        for name in ("alpha", "beta"):
            (Path(hive.get(name).worktree) / "dump.rdb").write_bytes(b"REDIS0011\0" + name.encode())
        await until(pilot, lambda: shows(app, "? dump.rdb  binary"), "the dump listed as binary in panel 3")
        await until(pilot, lambda: shows(app, "‼ binary, also beta"), "the binary overlap flagged on the file")
        assert shows(app, "all 1 file  1 binary")
        text = screen_text(app)
        assert "+0 -0" not in text and "same lines as" not in text, text
