"""The user's config.toml, the agent presets, resolving an agent to argv, and saving one setting in place."""

from __future__ import annotations

import ipaddress
import os
import shlex
import stat
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import (
    AgentPreset,
    Settings,
    config_path,
    load_settings,
    resolve_agent,
    save_setting,
    shipped_presets,
)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(path: Path, text: str) -> str:
    write(path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}:")


# -- where the file is --------------------------------------------------------------------------------------


def test_config_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STEM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert config_path() == tmp_path / "home" / ".config" / "stem" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert config_path() == tmp_path / "home" / ".config" / "stem" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "stem" / "config.toml"
    monkeypatch.setenv("STEM_CONFIG", str(tmp_path / "mine.toml"))
    assert config_path() == tmp_path / "mine.toml"


def test_load_uses_config_path_by_default(monkeypatch: pytest.MonkeyPatch, cfg: Path) -> None:
    monkeypatch.setenv("STEM_CONFIG", str(write(cfg, '[hive]\ntheme = "paper"\n')))
    assert load_settings().theme == "paper"
    assert load_settings().path == cfg


# -- loading ------------------------------------------------------------------------------------------------


def test_missing_file_gives_defaults(cfg: Path) -> None:
    s = load_settings(cfg)
    assert s == Settings(path=cfg)
    assert s.pool == ipaddress.IPv4Network("10.200.0.0/16")
    assert (s.theme, s.default_agent, dict(s.keys)) == ("stem-dark", "shell", {})
    assert set(s.agents) == {"claude", "codex", "aider", "gemini", "opencode", "shell"}


def test_full_file(cfg: Path) -> None:
    s = load_settings(
        write(
            cfg,
            """\
# my settings
[hive]
pool = "172.30.0.0/20"
theme = "stem-light"
default_agent = "claude"

[agents.claude]
attention = ["Proceed?"]

[agents.mine]
command = "my-agent --go {task}"
resume = "my-agent --again"

[keys]
quit = "ctrl+q"
colony.new = "N"
"app.help" = "f1"
""",
        )
    )
    assert s.pool == ipaddress.IPv4Network("172.30.0.0/20")
    assert (s.theme, s.default_agent) == ("stem-light", "claude")
    # An override changes only the fields it names; the rest comes from the shipped preset.
    assert s.agents["claude"] == AgentPreset(
        name="claude", command="claude {task}", resume="claude --continue", attention=("Proceed?",)
    )
    assert s.agents["mine"] == AgentPreset(name="mine", command="my-agent --go {task}", resume="my-agent --again")
    assert s.agents["codex"] == shipped_presets()["codex"]
    assert dict(s.keys) == {"quit": "ctrl+q", "colony.new": "N", "app.help": "f1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[hive]\npool = "10.0.0.1/16"\n', "2: [hive] pool: must be an IPv4 network like '10.200.0.0/16' (got "),
        ('[hive]\npool = "fd00::/64"\n', "2: [hive] pool: must be an IPv4 network"),
        ('[hive]\npool = "10.0.0.0/30"\n', "2: [hive] pool: must be /29 or wider to hold a colony (got "),
        ("[hive]\npool = 10\n", "2: [hive] pool: must be a string (got integer 10)"),
        ('[hive]\ntheme = ""\n', "2: [hive] theme: must not be empty"),
        (
            "[hive]\ncolour = 1\n",
            "2: [hive] colour: unknown key; did you mean 'colony_uid'? (known: pool, theme, default_agent, "
            "peer_exclude, isolation, colony_uid, agent_files)",
        ),
        ('\n[hivve]\ntheme = "x"\n', "2: [hivve]: unknown table (known tables: hive, network, agents, keys"),
        ('theme = "x"\n', "1: theme: unknown key at top level (known tables: hive, network, agents, keys"),
        ('[agents.new]\nresume = "x"\n', '1: [agents.new] command: missing (how to start this agent, e.g. "my-'),
        ('[agents.x]\ncommand = "a \'b"\n', "2: [agents.x] command: cannot split into words: No closing quotation"),
        ('[agents.x]\ncommand = "{task}"\n', "2: [agents.x] command: names no program"),
        ('[agents.x]\ncommand = "x"\ntask_command = "x -t"\n', "3: [agents.x] task_command: must contain {task}"),
        ('[agents.x]\ncommand = "x"\nattention = "Proceed?"\n', "3: [agents.x] attention: must be an array of"),
        ('[agents.x]\ncommand = "x"\nattention = ["a", 1]\n', "3: [agents.x] attention[1]: must be a string"),
        ('[agents.X]\ncommand = "x"\n', "1: [agents] X: invalid preset name"),
        ('[agents.x]\ncmd = "x"\n', "2: [agents.x] cmd: unknown key; did you mean 'command'?"),
        ("[keys]\nquit = 1\n", "2: [keys] quit: must be a string (got integer 1)"),
        ('[keys]\na.b = "x"\n"a.b" = "y"\n', "3: [keys] \"a.b\": binding 'a.b' is set twice"),
        ("[hive\n", "1: invalid TOML: "),
    ],
)
def test_errors_name_line_and_key(cfg: Path, text: str, expected: str) -> None:
    assert error_of(cfg, text).startswith(expected)


def test_unreadable_file_is_a_config_error(cfg: Path) -> None:
    cfg.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(cfg)


def test_shipped_presets_are_sane() -> None:
    presets = shipped_presets()
    for name, preset in presets.items():
        assert preset.name == name
        assert shlex.split(preset.command)
    assert presets["claude"].command == "claude {task}"
    assert presets["claude"].resume == "claude --continue"
    assert "Do you want to" in presets["claude"].attention
    assert presets["codex"].resume == "codex resume --last"


# -- resolving an agent -------------------------------------------------------------------------------------


@pytest.fixture
def settings(cfg: Path) -> Settings:
    return load_settings(
        write(
            cfg,
            """\
[agents.tool]
command = "python3 -c 'import sys; print(sys.argv)' {task}"
resume = "python3 --version"
attention = ["Continue?"]

[agents.flagged]
command = "sh"
task_command = "sh -c {task}"
""",
        )
    )


def test_task_becomes_one_argument_whatever_it_holds(settings: Settings) -> None:
    task = "fix the \"quoted\" bug; rm -rf / $HOME `x` 'y'"
    r = resolve_agent("tool", settings, task)
    assert r.argv == ("python3", "-c", "import sys; print(sys.argv)", task)
    # Same as quoting the task into the command line and splitting it again.
    assert r.argv == tuple(shlex.split(f"python3 -c 'import sys; print(sys.argv)' {shlex.quote(task)}"))
    assert r.task_passed is True
    assert r.resume_argv == ("python3", "--version")
    assert r.preset is settings.agents["tool"]
    assert (r.name, r.available) == ("tool", True)


def test_no_task_removes_the_placeholder(settings: Settings) -> None:
    for task in (None, "", "   "):
        r = resolve_agent("tool", settings, task)
        assert r.argv == ("python3", "-c", "import sys; print(sys.argv)")
        assert r.task_passed is False


def test_task_command_is_used_only_with_a_task(settings: Settings) -> None:
    assert resolve_agent("flagged", settings, "echo hi").argv == ("sh", "-c", "echo hi")
    assert resolve_agent("flagged", settings, None).argv == ("sh",)


def test_preset_without_task_placeholder_leaves_task_to_be_typed(settings: Settings) -> None:
    r = resolve_agent("aider", settings, "add tests")
    assert r.argv == ("aider",)
    assert r.task_passed is False


def test_raw_command(settings: Settings) -> None:
    r = resolve_agent("  /bin/echo --task={task}  ", settings, "a b")
    assert r.argv == ("/bin/echo", "--task=a b")
    assert (r.preset, r.resume_argv, r.name, r.available, r.task_passed) == (None, None, "echo", True, True)
    r = resolve_agent("no-such-agent-xyz --go", settings, None)
    assert r.argv == ("no-such-agent-xyz", "--go")
    assert r.available is False


def test_raw_command_that_cannot_be_split(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"^agent 'echo \"oops': cannot split"):
        resolve_agent('echo "oops', settings, None)
    with pytest.raises(ConfigError, match="empty"):
        resolve_agent("  ", settings, None)
    with pytest.raises(ConfigError, match="empty without a task"):
        resolve_agent("{task}", settings, None)


def test_default_agent_is_used_when_spec_is_none(cfg: Path) -> None:
    s = load_settings(write(cfg, '[hive]\ndefault_agent = "codex"\n'))
    assert resolve_agent(None, s, "do it").argv == ("codex", "do it")


def test_shell_preset_uses_shell_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/bin/sh")
    assert resolve_agent("shell", settings, "ignored").argv == ("/bin/sh",)
    monkeypatch.setenv("SHELL", "/nonexistent/zsh")
    expected = "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh"
    assert resolve_agent("shell", settings, None).argv == (expected,)
    monkeypatch.delenv("SHELL")
    assert resolve_agent("shell", settings, None).argv == (expected,)
    assert resolve_agent("shell", settings, None).available is True


# -- saving one setting -------------------------------------------------------------------------------------

KEEP = """\
# Stem settings — hand-written, with comments to keep.
[hive]
theme = "stem-dark"   # the theme I like
pool = '10.200.0.0/16'

[keys]
quit = "ctrl+q"
"""


def test_save_replaces_value_and_keeps_everything_else(cfg: Path) -> None:
    write(cfg, KEEP)
    save_setting("hive", "theme", "gruvbox", cfg)
    assert cfg.read_text() == KEEP.replace('"stem-dark"', '"gruvbox"')
    assert load_settings(cfg).theme == "gruvbox"


def test_save_adds_key_to_existing_section(cfg: Path) -> None:
    write(cfg, KEEP)
    save_setting("hive", "default_agent", "claude", cfg)
    assert cfg.read_text() == KEEP.replace(
        "pool = '10.200.0.0/16'\n", "pool = '10.200.0.0/16'\ndefault_agent = \"claude\"\n"
    )
    save_setting("keys", "help", "f1", cfg)
    assert cfg.read_text().endswith('quit = "ctrl+q"\nhelp = "f1"\n')


def test_save_adds_key_after_trailing_comment_of_last_line(cfg: Path) -> None:
    write(cfg, '[hive]\ntheme = "a" # note\n\n\n[keys]\n')
    save_setting("hive", "default_agent", "x", cfg)
    assert cfg.read_text() == '[hive]\ntheme = "a" # note\ndefault_agent = "x"\n\n\n[keys]\n'


def test_save_appends_new_section(cfg: Path) -> None:
    write(cfg, "# only a comment")
    save_setting("hive", "theme", "paper", cfg)
    assert cfg.read_text() == '# only a comment\n\n[hive]\ntheme = "paper"\n'
    save_setting("agents.mine", "command", "mine {task}", cfg)
    assert cfg.read_text().endswith('[agents.mine]\ncommand = "mine {task}"\n')
    assert load_settings(cfg).agents["mine"].command == "mine {task}"


def test_save_creates_missing_file_and_dirs(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"
    save_setting("hive", "theme", 'we"ird\\name\n', path)
    assert path.read_text() == '[hive]\ntheme = "we\\"ird\\\\name\\n"\n'
    assert load_settings(path).theme == 'we"ird\\name'


def test_save_edits_inline_and_multiline_values(cfg: Path) -> None:
    write(cfg, 'hive = { theme = "a", pool = "10.1.0.0/16" }\n[keys]\nquit = """\nq"""\n')
    save_setting("hive", "theme", "b", cfg)
    save_setting("keys", "quit", "x", cfg)
    assert cfg.read_text() == 'hive = { theme = "b", pool = "10.1.0.0/16" }\n[keys]\nquit = "x"\n'


def test_save_dotted_binding_edits_the_existing_spelling(cfg: Path) -> None:
    write(cfg, '[keys]\ncolony.new = "n"\n')
    save_setting("keys", "colony.new", "N", cfg)
    assert cfg.read_text() == '[keys]\ncolony.new = "N"\n'
    save_setting("keys", "colony.drop", "d", cfg)
    assert dict(load_settings(cfg).keys) == {"colony.new": "N", "colony.drop": "d"}


def test_save_refuses_invalid_value_and_leaves_file(cfg: Path) -> None:
    write(cfg, KEEP)
    with pytest.raises(ConfigError, match=r"\[hive\] pool: must be an IPv4 network"):
        save_setting("hive", "pool", "nonsense", cfg)
    with pytest.raises(ConfigError, match=r"\[hive\] bogus: unknown key"):
        save_setting("hive", "bogus", "x", cfg)
    assert cfg.read_text() == KEEP
    assert [p.name for p in cfg.parent.iterdir()] == ["config.toml"]  # no temp file left behind


def test_save_refuses_to_touch_a_broken_file(cfg: Path) -> None:
    write(cfg, "[hive\ntheme = 'x'\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        save_setting("hive", "theme", "y", cfg)
    assert cfg.read_text() == "[hive\ntheme = 'x'\n"


def test_save_into_inline_table_is_refused_with_advice(cfg: Path) -> None:
    write(cfg, 'hive = { theme = "a" }\n')
    with pytest.raises(ConfigError, match=r'\[hive\] is written inline or as dotted keys; add pool = "10.9.0.0/16"'):
        save_setting("hive", "pool", "10.9.0.0/16", cfg)


def test_save_keeps_file_mode(cfg: Path) -> None:
    write(cfg, KEEP)
    cfg.chmod(0o600)
    save_setting("hive", "theme", "x", cfg)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
