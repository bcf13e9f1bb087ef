"""Themes are TOML files: Stem's own in `themes/`, the user's in `<config folder>/themes/`. Each becomes a Textual
`Theme`; the app's CSS only uses theme variables, so a theme file is all it takes to restyle everything.

A theme file:

    name = "my-theme"        # what the palette and `[hive] theme` call it
    dark = true
    primary = "#5fafd7"      # and secondary, accent, warning, error, success, foreground, background, surface, panel
    [variables]              # optional: any Textual theme variable
    footer-key-foreground = "#5fafd7"
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from core.errors import ConfigError

__all__ = ["SHIPPED_THEMES", "load_theme", "load_themes", "theme_dirs"]


def _shipped_themes() -> Path:
    """themes/ beside the package in a checkout (editable install), else where the wheel put it as data."""
    beside = Path(__file__).resolve().parent.parent / "themes"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "stem" / "themes"


SHIPPED_THEMES = _shipped_themes()
_COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background", "surface")
_OPTIONAL = ("panel", "boost")
_KEYS = frozenset(("name", "dark", "variables", *_COLOURS, *_OPTIONAL))


def theme_dirs(config_file: Path) -> list[Path]:
    """Where themes are looked for: Stem's own, then the user's (a user theme of the same name wins)."""
    return [SHIPPED_THEMES, config_file.parent / "themes"]


def load_theme(path: Path) -> Theme:
    """One theme file as a Textual Theme; ConfigError names the file and the key that is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read theme: {exc.strerror}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{path}: name: missing (the name the palette and [hive] theme use)")
    colours: dict[str, str] = {}
    for key in (*_COLOURS, *_OPTIONAL):
        if key not in data:
            if key in _COLOURS:
                raise ConfigError(f'{path}: {key}: missing (a colour like "#5fafd7")')
            continue
        colours[key] = _colour(path, key, data[key])
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ConfigError(f"{path}: dark: must be true or false (got {dark!r})")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ConfigError(f"{path}: [variables]: every value must be a string")
    return Theme(
        name=name.strip(),
        primary=colours["primary"],
        secondary=colours["secondary"],
        accent=colours["accent"],
        warning=colours["warning"],
        error=colours["error"],
        success=colours["success"],
        foreground=colours["foreground"],
        background=colours["background"],
        surface=colours["surface"],
        panel=colours.get("panel"),
        boost=colours.get("boost"),
        dark=dark,
        variables=dict(variables),
    )


def load_themes(dirs: list[Path]) -> dict[str, Theme]:
    """Every `*.toml` theme in `dirs` (missing folders are fine), by name."""
    themes: dict[str, Theme] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            theme = load_theme(path)
            themes[theme.name] = theme
    return themes


def _colour(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{path}: {key}: must be a colour string like "#5fafd7" (got {value!r})')
    try:
        Color.parse(value)
    except ColorParseError:
        raise ConfigError(f'{path}: {key}: {value!r} is not a colour (try "#5fafd7")') from None
    return value
