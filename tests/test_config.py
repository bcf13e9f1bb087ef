"""colony.toml: what parses into what, and the exact one-line error a user sees for each mistake."""

from __future__ import annotations

import dataclasses
import random
import signal
import textwrap
from pathlib import Path

import pytest
import tomli

from core.config import (
    NOT_IN_FILE,
    ColonyConfig,
    Limits,
    ServiceSpec,
    in_file,
    known_keys,
    load_colony_config,
    parse_colony_config,
    service_start_order,
    stop_patience,
)
from core.egress import Egress
from core.errors import ConfigError
from core.toml_doc import TomlLocator

FULL = """\
[colony]
agent = "claude"
setup = ["npm ci", "npm run migrate"]
build = ["npm run build"]
env = { KEY = "value" }

[services.api]
command = "python -m api"
port = 8000
ready = "http:/health"
ready_timeout = 5

[services.web]
command = "npm run dev -- --port 3000"
port = 3000
working_dir = "frontend"
env = { NODE_ENV = "development" }
restart = "always"
ready = "tcp"
depends_on = ["api"]

[services.worker]
command = "python -m worker"
restart = "no"
depends_on = ["api", "web"]
stop_signal = "INT"
stop_timeout = 20

[limits]
memory = "2G"
cpus = 1.5
pids = 512

[network]
egress = "none"
host_ports = [5432, 6379]
peers = ["beta", "alpha", "beta"]
"""


def parse(text: str) -> ColonyConfig:
    return parse_colony_config(textwrap.dedent(text), Path("colony.toml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_full_example_parses_into_every_field() -> None:
    cfg = parse(FULL)
    assert cfg.path == Path("colony.toml")
    assert cfg.agent == "claude"
    assert cfg.setup == ("npm ci", "npm run migrate")
    assert cfg.build == ("npm run build",)
    assert dict(cfg.env) == {"KEY": "value"}
    assert list(cfg.services) == ["api", "web", "worker"]
    assert cfg.services["api"] == ServiceSpec(
        name="api", command="python -m api", port=8000, ready="http:/health", ready_timeout=5.0
    )
    web = cfg.services["web"]
    assert web.working_dir == "frontend"
    assert dict(web.env) == {"NODE_ENV": "development"}
    assert (web.restart, web.ready, web.ready_timeout, web.depends_on) == ("always", "tcp", 30.0, ("api",))
    worker = cfg.services["worker"]
    assert (worker.port, worker.ready, worker.restart) == (None, None, "no")
    assert (worker.stop_signal, worker.stop_timeout) == (signal.SIGINT, 20.0)
    assert (web.stop_signal, web.stop_timeout) == (signal.SIGTERM, None)  # a stop's own: SIGTERM, 5 s
    assert cfg.limits == Limits(memory=2 * 1024**3, cpus=1.5, pids=512)
    assert cfg.network.egress == Egress("none")
    assert cfg.network.host_ports == (5432, 6379)
    assert cfg.network.peers == ("alpha", "beta")


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ('[terminal]\ncommand = "bash"', "Stem opens no extra shell in a colony yet"),
    ],
)
def test_tables_stem_does_not_apply_yet_are_refused_not_ignored(table: str, why: str) -> None:
    message = error_of(table)
    assert "is not applied by this version of Stem" in message and why in message
    assert message.startswith("colony.toml:2:")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('stop_signal = "KILL"', "stop_signal: must be one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2,"),
        ("stop_signal = 2", "stop_signal: must be a string (got integer 2)"),
        ("stop_timeout = 0", "stop_timeout: must be a number greater than 0 (got 0)"),
        ("stop_timeout = 900", "stop_timeout: must be at most 300 seconds (got 900)"),
    ],
)
def test_a_stop_signal_or_timeout_that_cannot_be_is_one_line(line: str, error: str) -> None:
    message = error_of(f'[services.db]\ncommand = "postgres"\n{line}\n')
    assert message.startswith("colony.toml:3: [services.db] ") and error in message, message


def test_peers_must_be_colony_names() -> None:
    assert "'Not A Name' is not a colony name" in error_of('[network]\npeers = ["Not A Name"]')


def test_empty_file_gives_defaults_but_keeps_path() -> None:
    cfg = parse("")
    assert cfg == dataclasses.replace(ColonyConfig(), path=Path("colony.toml"))
    assert cfg.agent is None and cfg.services == {} and cfg.network.egress is None
    assert cfg.limits == Limits(None, None, None)


def test_config_is_immutable() -> None:
    cfg = parse(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.agent = "codex"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.services["web"].env["X"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.services["new"] = cfg.services["web"]  # type: ignore[index]


def test_load_missing_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_colony_config(tmp_path)
    assert cfg == ColonyConfig()
    assert cfg.path is None


def test_load_reads_colony_toml_from_root(tmp_path: Path) -> None:
    (tmp_path / "colony.toml").write_text('[colony]\nagent = "codex"\n')
    cfg = load_colony_config(tmp_path)
    assert cfg.agent == "codex"
    assert cfg.path == tmp_path / "colony.toml"


def test_load_error_names_the_file_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "colony.toml").write_text("[colony]\nbogus = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^repo/colony\.toml:2: \[colony\] bogus: unknown key"):
        load_colony_config(tmp_path / "repo")


def test_load_rejects_non_utf8_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "colony.toml").write_bytes(b'[colony]\nagent = "\xff"\n')
    with pytest.raises(ConfigError, match=r"colony\.toml:2: not UTF-8 text$"):
        load_colony_config(tmp_path)


# -- error messages ----------------------------------------------------------------------------------------


def test_unknown_key_names_line_and_known_keys() -> None:
    assert (
        error_of("""\
        [colony]
        agent = "claude"
        bogus = 1
        """)
        == "colony.toml:3: [colony] bogus: unknown key (known: agent, setup, build, env, pass_env)"
    )


def test_unknown_key_suggests_close_match() -> None:
    msg = error_of("""\
        [services.web]
        command = "x"
        restat = "no"
        """)
    assert msg.startswith("colony.toml:3: [services.web] restat: unknown key; did you mean 'restart'? (known:")


def test_bad_restart_policy() -> None:
    text = "[services.web]\ncommand = 'x'\n" + "\n" * 9 + "restart = 'sometimes'\n"
    assert error_of(text) == (
        "colony.toml:12: [services.web] restart: must be one of no, on-failure, always (got 'sometimes')"
    )


def test_invalid_toml_reports_tomli_line() -> None:
    assert (
        error_of("""\
        [colony]
        agent = "claude"

        [services.web]
        command "x"
        """)
        == "colony.toml:5: invalid TOML: Expected '=' after a key in a key/value pair"
    )


def test_a_byte_order_mark_is_not_an_error() -> None:
    """Windows editors may save one; it read as `colony.toml:1: invalid TOML: Invalid statement`."""
    assert parse("\ufeff[services.web]\ncommand = 'x'\n").services["web"].command == "x"


def test_duplicate_key_is_invalid_toml() -> None:
    assert error_of("[colony]\nagent = 'a'\nagent = 'b'\n").startswith("colony.toml:3: invalid TOML:")


def test_unknown_dependency() -> None:
    assert (
        error_of("""\
        [services.api]
        command = "x"

        [services.web]
        command = "y"
        port = 3000
        depends_on = ["api", "db"]
        """)
        == "colony.toml:7: [services.web] depends_on: unknown service 'db'"
    )


def test_dependency_cycle_is_named() -> None:
    msg = error_of("""\
        [services.a]
        command = "x"
        depends_on = ["b"]
        [services.b]
        command = "x"
        depends_on = ["c"]
        [services.c]
        command = "x"
        depends_on = ["a"]
        """)
    assert msg == "colony.toml:3: [services.a] depends_on: dependency cycle: a -> b -> c -> a"


def test_self_dependency_is_a_cycle() -> None:
    msg = error_of("[services.a]\ncommand = 'x'\ndepends_on = ['a']\n")
    assert msg == "colony.toml:3: [services.a] depends_on: dependency cycle: a -> a"


def test_wrong_type_says_expected_and_found() -> None:
    assert (
        error_of("""\
        [services.web]
        command = "x"
        port = "3000"
        """)
        == "colony.toml:3: [services.web] port: must be an integer (got string '3000')"
    )
    assert error_of("[colony]\nsetup = 'npm ci'\n") == (
        "colony.toml:2: [colony] setup: must be an array of strings (got string 'npm ci')"
    )
    assert error_of("[network]\negress = 'yes'\n") == (
        "colony.toml:2: [network] egress: must be 'nat', 'none' or a list of addresses and host names (got 'yes')"
    )
    assert error_of("[limits]\npids = true\n") == (
        "colony.toml:2: [limits] pids: must be an integer (got boolean true)"
    )
    assert error_of("colony = 3\n") == "colony.toml:1: colony: must be a table (got integer 3)"
    assert error_of("[services]\nweb = 'npm start'\n") == (
        "colony.toml:2: [services] web: must be a table (got string 'npm start')"
    )


def test_array_element_error_points_at_its_line() -> None:
    assert (
        error_of("""\
        [colony]
        setup = [
            "npm ci",
            # a comment with ] and " in it
            "",
        ]
        """)
        == "colony.toml:5: [colony] setup[1]: must not be empty"
    )


def test_inline_table_and_dotted_keys_are_located() -> None:
    assert (
        error_of("""\
        [colony]
        agent = "a"

        [services]
        web = { command = "x", env = { PORT = 3000 } }
        """)
        == "colony.toml:5: [services.web] env.PORT: must be a string (got integer 3000)"
    )
    assert (
        error_of("""\
        services.web.command = "x"
        services.web.ready_timeout = 0
        """)
        == "colony.toml:2: [services.web] ready_timeout: must be a number greater than 0 (got 0)"
    )


def test_quoted_keys_are_located_and_quoted_back() -> None:
    assert (
        error_of("""\
        [colony]
        agent = "a"
        [colony.env]
        "MY VAR" = 1
        """)
        == 'colony.toml:4: [colony] env."MY VAR": must be a string (got integer 1)'
    )
    assert error_of("""\
        [ "services" . 'web' ]
        command = "x"
        "restart" = "never"
        """).startswith("colony.toml:3: [services.web] restart: must be one of")


def test_multiline_strings_do_not_confuse_the_locator() -> None:
    assert (
        error_of('''\
        [colony]
        agent = """
        [services.fake]
        port = "not me"
        """
        setup = [\'\'\'a ] b\'\'\', 7]
        ''')
        == "colony.toml:6: [colony] setup[1]: must be a string (got integer 7)"
    )


def test_missing_command_points_at_table_header() -> None:
    assert (
        error_of("""\
        [colony]
        agent = "a"

        [services.web]
        port = 3000
        """)
        == "colony.toml:4: [services.web] command: missing (the command line that runs this service)"
    )


def test_unknown_table_and_top_level_key() -> None:
    assert error_of("[colony]\n\n[service.web]\ncommand = 'x'\n") == (
        "colony.toml:3: [service]: unknown table; did you mean [services]? "
        "(known tables: colony, services, limits, network, peering, terminal)"
    )
    assert error_of('agent = "claude"\n').startswith("colony.toml:1: agent: unknown key at top level")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web", True),
        ("a-b_c9", True),
        ("9lives", True),
        ("x" * 32, True),
        ("x" * 33, False),
        ("Web", False),
        ("-web", False),
        ("web.app", False),
        ("", False),
    ],
)
def test_service_names(name: str, ok: bool) -> None:
    text = f'[services."{name}"]\ncommand = "x"\n'
    if ok:
        assert list(parse(text).services) == [name]
    else:
        assert "invalid service name" in error_of(text)


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("/srv/app", "must be relative to the worktree (got '/srv/app')"),
        ("../other", "must stay inside the worktree (got '../other')"),
        ("a/../../b", "must stay inside the worktree (got 'a/../../b')"),
        ("", "must not be empty"),
    ],
)
def test_working_dir_must_stay_in_worktree(given: str, error: str) -> None:
    text = f'[services.web]\ncommand = "x"\nworking_dir = "{given}"\n'
    assert error_of(text) == f"colony.toml:3: [services.web] working_dir: {error}"


def test_working_dir_is_normalised() -> None:
    cfg = parse('[services.web]\ncommand = "x"\nworking_dir = "./a/../front/"\n')
    assert cfg.services["web"].working_dir == "front"


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("tcp", "tcp"),
        ("TCP", "tcp"),
        ("http:/health", "http:/health"),
        ("http", "http:/"),
        ("http:/", "http:/"),
        ("http:health", "http:/health"),
        ("http:/a/b?x=1", "http:/a/b?x=1"),
    ],
)
def test_ready_is_normalised(given: str, normal: str) -> None:
    cfg = parse(f'[services.web]\ncommand = "x"\nport = 80\nready = "{given}"\n')
    assert cfg.services["web"].ready == normal


@pytest.mark.parametrize("given", ["udp", "http://localhost/x", "http:/a b", "https:/x", "", "exec:true"])
def test_bad_ready(given: str) -> None:
    msg = error_of(f'[services.web]\ncommand = "x"\nport = 80\nready = "{given}"\n')
    assert msg.startswith("colony.toml:4: [services.web] ready: must ")


def test_a_service_with_a_port_is_ready_when_the_port_answers_unless_told_none() -> None:
    cfg = parse('[services.web]\ncommand = "x"\nport = 80\n[services.job]\ncommand = "y"\n')
    assert (cfg.services["web"].ready, cfg.services["job"].ready) == ("tcp", None)
    cfg = parse(
        '[services.web]\ncommand = "x"\nport = 80\nready = "none"\n[services.job]\ncommand = "y"\nready = "None"\n'
    )
    assert (cfg.services["web"].ready, cfg.services["job"].ready) == (None, None)


def test_ready_probe_needs_port() -> None:
    assert error_of('[services.web]\ncommand = "x"\nready = "http:/"\n') == (
        "colony.toml:3: [services.web] ready: 'http:/' needs a port: add port = ... to [services.web]"
    )


def test_preview_is_on_for_a_service_with_a_port_unless_turned_off() -> None:
    cfg = parse('[services.web]\ncommand = "x"\nport = 80\n[services.db]\ncommand = "y"\nport = 5432\npreview = false')
    assert (cfg.services["web"].preview, cfg.services["db"].preview) == (True, False)
    assert error_of('[services.web]\ncommand = "x"\npreview = true\n') == (
        "colony.toml:3: [services.web] preview: a preview needs a port: add port = ... to [services.web]"
    )
    assert error_of('[services.db]\ncommand = "x"\nport = 5432\npreview = "no"\n') == (
        "colony.toml:4: [services.db] preview: must be true or false (got string 'no')"
    )


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_range(port: int) -> None:
    assert error_of(f'[services.web]\ncommand = "x"\nport = {port}\n') == (
        f"colony.toml:3: [services.web] port: must be between 1 and 65535 (got {port})"
    )


def test_two_services_on_one_port() -> None:
    msg = error_of('[services.a]\ncommand = "x"\nport = 3000\n[services.b]\ncommand = "y"\nport = 3000\n')
    assert msg == "colony.toml:6: [services.b] port: 3000 is already used by service 'a'"


def test_depends_on_duplicates_collapse() -> None:
    cfg = parse('[services.a]\ncommand="x"\n[services.b]\ncommand="y"\ndepends_on=["a", "a"]\n')
    assert cfg.services["b"].depends_on == ("a",)


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("1048576", 1048576),
        ('"512M"', 512 * 1024**2),
        ('"2G"', 2 * 1024**3),
        ('"2g"', 2 * 1024**3),
        ('"1.5G"', 3 * 1024**3 // 2),
        ('"1024KiB"', 1024**2),
    ],
)
def test_memory_sizes(given: str, size: int) -> None:
    assert parse(f"[limits]\nmemory = {given}\n").limits.memory == size


def test_a_memory_limit_nothing_could_start_in_or_no_kernel_could_hold_is_refused() -> None:
    assert error_of("[limits]\nmemory = 1\n") == (
        "colony.toml:2: [limits] memory: must be at least 1M: a colony's processes cannot start in less (got 1)"
    )
    assert error_of('[limits]\nmemory = "512K"\n').endswith("cannot start in less (got '512K')")
    assert error_of('[limits]\nmemory = "99999999T"\n') == (
        "colony.toml:2: [limits] memory: must be less than 8E; leave memory out for no limit (got '99999999T')"
    )
    assert parse('[limits]\nswap = "64KiB"\n').limits.swap == 64 * 1024  # no floor for swap


@pytest.mark.parametrize("given", ['"lots"', '"2X"', '"-1G"', "0", '"0M"', "1.5", "true"])
def test_bad_memory(given: str) -> None:
    assert error_of(f"[limits]\nmemory = {given}\n").startswith("colony.toml:2: [limits] memory: must be ")


@pytest.mark.parametrize("given", ["0", "-1", '"2"', "nan", "inf"])
def test_bad_cpus(given: str) -> None:
    assert error_of(f"[limits]\ncpus = {given}\n").startswith("colony.toml:2: [limits] cpus: must be a number")


def test_env_values_must_be_strings_and_may_be_empty() -> None:
    assert dict(parse('[colony]\nenv = { EMPTY = "" }\n').env) == {"EMPTY": ""}
    assert error_of("[colony.env]\nPORT = 3000\n") == (
        "colony.toml:2: [colony] env.PORT: must be a string (got integer 3000)"
    )
    assert "not a valid environment variable name" in error_of('[colony.env]\n"A=B" = "x"\n')


def test_agent_must_be_non_empty_string() -> None:
    assert error_of('[colony]\nagent = "  "\n') == "colony.toml:2: [colony] agent: must not be empty"
    assert error_of("[colony]\nagent = ['claude']\n") == ("colony.toml:2: [colony] agent: must be a string (got array)")


# -- start order -------------------------------------------------------------------------------------------


def test_start_order_waves_follow_dependencies_then_file_order() -> None:
    assert service_start_order(parse(FULL)) == [["api"], ["web"], ["worker"]]
    cfg = parse("""\
        [services.web]
        command = "x"
        depends_on = ["api", "cache"]
        [services.db]
        command = "x"
        [services.api]
        command = "x"
        depends_on = ["db"]
        [services.cache]
        command = "x"
        [services.docs]
        command = "x"
        """)
    assert service_start_order(cfg) == [["db", "cache", "docs"], ["api"], ["web"]]


def test_start_order_of_no_services_is_empty() -> None:
    assert service_start_order(ColonyConfig()) == []


def test_start_order_refuses_unchecked_cycle() -> None:
    a = ServiceSpec(name="a", command="x", depends_on=("b",))
    b = ServiceSpec(name="b", command="x", depends_on=("a",))
    with pytest.raises(ConfigError, match="depend on each other"):
        service_start_order(ColonyConfig(services={"a": a, "b": b}))


# -- the locator on its own --------------------------------------------------------------------------------


def test_locator_lines_for_headers_keys_and_elements() -> None:
    loc = TomlLocator(
        textwrap.dedent("""\
        top = 1
        [a.b]
        c = [
          1,
          { d = 2 },
        ]
        "e.f".g = 'x'
        [[arr]]
        h = 1
        [[arr]]
        h = 2
        """)
    )
    assert loc.line_of(("top",)) == 1
    assert loc.line_of(("a",)) == 2
    assert loc.line_of(("a", "b")) == 2
    assert loc.line_of(("a", "b", "c")) == 3
    assert loc.line_of(("a", "b", "c", 1)) == 5
    assert loc.line_of(("a", "b", "c", 1, "d")) == 5
    assert loc.line_of(("a", "b", "e.f", "g")) == 7
    assert loc.line_of(("a", "b", "missing")) == 2
    assert loc.line_of(("arr", 1, "h")) == 11
    assert loc.line_of(("nowhere",)) == 1


def test_crlf_line_endings_keep_line_numbers() -> None:
    text = '[colony]\r\nagent = "a"\r\n\r\n[services.web]\r\ncommand = "x"\r\nport = "80"\r\n'
    with pytest.raises(ConfigError) as info:
        parse_colony_config(text, Path("colony.toml"))
    assert str(info.value) == "colony.toml:6: [services.web] port: must be an integer (got string '80')"


def test_agent_command_line_must_split() -> None:
    assert parse("[colony]\nagent = \"aider --model 'x y'\"\n").agent == "aider --model 'x y'"
    assert error_of('[colony]\nagent = "aider \'oops"\n') == (
        "colony.toml:2: [colony] agent: cannot split into words: No closing quotation"
    )


TRICKY = '''\
title = "TOML \\"Example\\" [not a table]"   # comment ]
"quoted key" = 'literal \\ no escape'
'lit.key' = 1979-05-27 07:32:00Z
dotted . "a b" . c = 0x1F
[ owner ]
name = """
multi [fake]
x = 1
"""""
lit = \'\'\'
it's \'\'ok\'\' \'\'\'
nums = [ 1, 2,
  # comment ]
  3, ]
points = [ { x = 1, y = 2 },
           { x = 7, z = { deep = "q" } } ]
"" = "empty key"
[[products]]
name = "Hammer"
[[products]]
sku = 284758393
[owner.sub]
k = true
'''


def test_locator_finds_every_value_tomli_reads() -> None:
    loc = TomlLocator(TRICKY)
    leaves: dict[tuple[str | int, ...], int] = {}

    def walk(path: tuple[str | int, ...], node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk((*path, key), value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk((*path, i), value)
        else:
            assert path in loc.values, path
            leaves[path] = loc.line_of(path)

    walk((), tomli.loads(TRICKY))
    assert leaves == {
        ("title",): 1,
        ("quoted key",): 2,
        ("lit.key",): 3,
        ("dotted", "a b", "c"): 4,
        ("owner", "name"): 6,
        ("owner", "lit"): 10,
        ("owner", "nums", 0): 12,
        ("owner", "nums", 1): 12,
        ("owner", "nums", 2): 14,
        ("owner", "points", 0, "x"): 15,
        ("owner", "points", 0, "y"): 15,
        ("owner", "points", 1, "x"): 16,
        ("owner", "points", 1, "z", "deep"): 16,
        ("owner", ""): 17,
        ("products", 0, "name"): 19,
        ("products", 1, "sku"): 21,
        ("owner", "sub", "k"): 23,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = " + "[" * 10_000 + "]" * 10_000, "colony.toml: invalid TOML: arrays, tables or keys nested too deeply"),
        ("x = " + "{a = " * 10_000 + "1" + "}" * 10_000, "colony.toml: invalid TOML: arrays, tables or keys nested"),
        ("[colony]\n" + "a." * 5_000 + "b = 1", "colony.toml: invalid TOML: arrays, tables or keys nested"),
        ("\n[colony]\nsetup = " + "[" * 300 + "]" * 300, "colony.toml:3: tables or arrays nested more than 32 deep"),
        ("[colony]\n" + "a." * 100 + "b = 1", "colony.toml:2: tables or arrays nested more than 32 deep"),
    ],
)
def test_deep_nesting_is_one_line_naming_the_file(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_a_value_with_a_line_break_stays_on_one_line_in_the_error() -> None:
    assert error_of('[services.x]\ncommand = "a"\nrestart = """no\nx"""\n') == (
        "colony.toml:3: [services.x] restart: must be one of no, on-failure, always (got 'no\\nx')"
    )


def test_fuzzed_files_give_one_line_errors_or_a_config(tmp_path: Path) -> None:
    """200 mutations of valid files (random bytes in, bytes out, truncation, openers repeated): each one either
    parses or is refused with a one-line ConfigError naming the file; nothing else escapes."""
    rng = random.Random(14)
    seeds = [FULL.encode(), b'[colony]\nagent = "shell"\nenv = { A = "1", B = "" }\n[services.w]\ncommand = "x"\n']
    openers = [b"[", b"{a=", b'"', b"\n", b"'''", b"=", b"a."]
    snippets = [b"[services.z]\n", b"port = 99999\n", b"x.y.z = [[1]]\n", b"\\u0000", b'restart = "a\\nb"\n']
    path = tmp_path / "colony.toml"
    refused = 0
    for _ in range(200):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            move = rng.randrange(5)
            if move == 0:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif move == 1:
                del data[at : at + rng.randint(1, 16)]
            elif move == 2:
                del data[at:]
            elif move == 3:
                data[at:at] = rng.choice(openers) * rng.randint(1, 2_000)
            else:
                data[at:at] = rng.choice(snippets)
        path.write_bytes(bytes(data))
        try:
            load_colony_config(tmp_path)
        except ConfigError as exc:
            refused += 1
            message = str(exc)
            assert "\n" not in message and "\r" not in message, message
            assert message.startswith(str(path)), message
    assert refused > 100  # the mutations do break most files


def test_known_keys_come_from_the_schema() -> None:
    @dataclasses.dataclass
    class Schema:
        path: str = dataclasses.field(default="", metadata=NOT_IN_FILE)
        alpha: int = 0
        beta: int = dataclasses.field(default=0, metadata=in_file("table", "b"))
        gamma: int = dataclasses.field(default=0, metadata=in_file("table", "inner", "g"))
        delta: int = dataclasses.field(default=0, metadata=in_file("other"))

    assert known_keys(Schema) == ("alpha", "table", "other")
    assert known_keys(Schema, ("table",)) == ("b", "inner")
    assert known_keys(Schema, ("table", "inner")) == ("g",)
    assert known_keys(ColonyConfig)[:2] == ("colony", "services")
    assert {"agent", "setup", "build", "env"} <= set(known_keys(ColonyConfig, ("colony",)))
    assert "name" not in known_keys(ServiceSpec)
    assert "ready_timeout" in known_keys(ServiceSpec)


def test_the_stop_patience_of_chained_services_is_the_sum_of_their_waves():
    # Services stop in waves, the reverse of their depends_on order, each wave as long as its slowest service: a
    # stopper that waited only as long as the slowest single service killed the host before the last wave ended.
    text = (
        '[services.db]\ncommand = "db"\nstop_timeout = 6\n'
        '[services.api]\ncommand = "api"\ndepends_on = ["db"]\nstop_timeout = 6\n'
        '[services.worker]\ncommand = "worker"\ndepends_on = ["db"]\n'
        '[services.web]\ncommand = "web"\ndepends_on = ["api"]\nstop_timeout = 2\n'
    )
    config = parse_colony_config(text, Path("colony.toml"))
    assert stop_patience(config, 5) == 6 + 6 + 2  # db; then api and worker (grace 5); then web
    assert (
        stop_patience(parse_colony_config('[services.a]\ncommand = "a"\nstop_timeout = 1\n', Path("colony.toml")), 5)
        == 5
    )
    assert stop_patience(parse_colony_config("", Path("colony.toml")), 5) == 5
