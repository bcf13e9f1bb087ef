"""Where the hive lives, as a string: what the warm start's client (stem/warm_client.py) needs of
core.locations, without pathlib, whose import costs every command ~8 ms of start-up."""

from __future__ import annotations

import os


def home_text() -> str:
    """`STEM_HOME`, else `$XDG_DATA_HOME/stem`, else ~/.local/share/stem, made absolute (`core.locations.stem_home`
    as a string, without pathlib, for the warm client)."""
    env = os.environ.get("STEM_HOME")
    if env:
        home = os.path.expanduser(env)
        return home if os.path.isabs(home) else os.path.join(os.getcwd(), home)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "stem")
