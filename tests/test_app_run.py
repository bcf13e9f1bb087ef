"""`stem.app.run`, what bare `stem` calls: a bad config, theme or keymap is one line on stderr and exit code 2,
before or instead of a screen."""

from __future__ import annotations

import pytest

from stem.app import run
from stem.themes import SHIPPED_THEMES, load_theme, load_themes

pytestmark = pytest.mark.root


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config" / "stem" / "config.toml"
    path.parent.mkdir(parents=True)
    monkeypatch.setenv("STEM_CONFIG", str(path))
    return path


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    return err


def test_an_unknown_theme_is_one_line_and_exit_2(config, capsys):
    config.write_text('[hive]\ntheme = "neon"\n')
    assert run(lambda _settings: pytest.fail("no hive should be made")) == 2
    line = one_line(capsys)
    assert "no theme named 'neon'" in line and "stem-light" in line


def test_a_broken_user_theme_names_its_file(config, capsys):
    themes = config.parent / "themes"
    themes.mkdir()
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "not a colour"\n')
    assert run(lambda _settings: pytest.fail("no hive should be made")) == 2
    line = one_line(capsys)
    assert str(themes / "mine.toml") in line


def test_an_unknown_binding_id_is_one_line_and_exit_2(config, capsys):
    config.write_text('# mine\n[keys]\n"colony.nuke" = "x"\n')
    assert run(lambda _settings: pytest.fail("no hive should be made")) == 2
    assert f"{config}:3: [keys] colony.nuke: no such binding" in one_line(capsys)  # the file as given, and its line


def test_a_hive_whose_registry_the_full_disk_refuses_is_one_line_and_exit_2(config, capsys):
    """Opening hive.db on a full disk fails in SQLite ("disk I/O error"): the UI said it with a traceback."""
    import sqlite3

    def full(_settings):
        raise sqlite3.OperationalError("disk I/O error")

    assert run(full) == 2
    line = one_line(capsys)
    assert "cannot be written (disk I/O error): free some space" in line, line


def test_a_remap_onto_another_bindings_key_is_one_line_and_exit_2(config, capsys):
    config.write_text('[keys]\n"colony.destroy" = "s"\n')  # stop/start's key in the same panel
    assert run(lambda _settings: pytest.fail("no hive should be made")) == 2
    line = one_line(capsys)
    assert f"{config}:2: [keys] colony.destroy = 's': s is also colony.stop_start (stop/start) there" in line, line
    config.write_text('[keys]\n"colony.destroy" = "x"\n"colony.stop_start" = "d"\n')  # swapped: both kept
    from core.settings import load_settings
    from stem.keys import keymap

    assert keymap(load_settings(config).keys) == {"colony.destroy": "x", "colony.stop_start": "d"}


def test_the_shipped_themes_are_a_dark_and_a_light_one():
    themes = load_themes([SHIPPED_THEMES])
    assert themes["stem-dark"].dark is True
    assert themes["stem-light"].dark is False


def test_a_theme_file_missing_a_colour_is_refused(tmp_path):
    path = tmp_path / "half.toml"
    path.write_text('name = "half"\nprimary = "#123456"\n')
    with pytest.raises(Exception, match=r"half.toml: secondary: missing"):
        load_theme(path)


def test_the_css_has_no_hex_colours():
    import re
    from pathlib import Path

    import stem

    root = Path(stem.__file__).parent
    for source in [*root.glob("*.tcss"), *root.rglob("*.py")]:
        text = source.read_text()
        css = text if source.suffix == ".tcss" else "\n".join(re.findall(r'CSS = """(.*?)"""', text, re.S))
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b", css), f"{source} has a hex colour: use theme variables"
