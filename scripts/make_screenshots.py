#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: the app takes its own pictures of the scenes in tests/scenes.py (the same states
as the snapshot tests), on a real hive of real colonies running the fake agent.

Run as root from the repository: `python3 scripts/make_screenshots.py [SCENE ...]` (default: every scene). Every
colony it makes is destroyed and its hive removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import random
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from scenes import SCENES, SIZE, Scene, demo_repo, play, scene_app  # noqa: E402

from core import claims  # noqa: E402
from core.hive import Hive  # noqa: E402

OUT = ROOT / "screenshots"


async def shoot(scene: Scene, home: Path) -> Path:
    os.environ["HOME"] = str(home / "user")  # the app shows the repository as ~/shop
    repo = demo_repo(home / "user")
    pool = ipaddress.IPv4Network(f"10.{random.randint(201, 250)}.{random.randrange(0, 256, 16)}.0/20")
    prefix = "s" + secrets.token_hex(2)
    hive = Hive(home, prefix=prefix, pool=pool, stop_grace=2.0)
    app = scene_app(hive, repo, theme=scene.theme)
    target = OUT / f"{scene.name}.svg"
    async with app.run_test(size=SIZE) as pilot:
        try:
            await play(scene, pilot, app, hive, repo)
            await pilot.pause()
            app.save_screenshot(target.name, str(OUT))
        finally:
            for rec in hive.colonies():
                await hive.destroy(rec.name, force=True)
            await hive.close()
            claims.release(prefix)  # the throwaway hive's claim on its prefix and pool
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenes", nargs="*", choices=[*SCENES, []], help="scenes to shoot (default: all)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    for name in args.scenes or list(SCENES):
        home = Path(tempfile.mkdtemp(prefix="stem-screenshots-"))
        try:
            path = asyncio.run(shoot(SCENES[name], home))
            print(f"{path.relative_to(ROOT)}  {SCENES[name].description}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
