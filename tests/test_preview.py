"""Preview routing for real: the hive's Caddy on one loopback port, a route per ready service of every colony,
following the services as they stop and start, and gone with the hive's last colony."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import http_get, make_repo, run_stem, wait_for
from test_host import fake_agent_config, host_pid, listed

from core import claims, preview
from core.errors import ConfigError
from core.hive import Hive
from core.preview import PreviewPaths
from core.procs import alive
from core.settings import load_settings

# The service waits while `hold` exists in its worktree: a restart then leaves it not ready for as long as the
# test needs to look, and never because of timing.
SERVICE = """\
[services.web]
command = '''while [ -e hold ]; do sleep 0.05; done
echo "I am $COLONY_NAME" > whoami.txt; exec python3 -m http.server 3000'''
port = 3000
ready = "http:/whoami.txt"
"""


def preview_port(hive_env) -> int:
    return int(hive_env.env["STEM_PREVIEW_PORT"])


def through(port: int, host: str, path: str = "/whoami.txt") -> tuple[int, str] | None:
    """(status, body) of a request to the preview port for `host` (as a browser sends it), or None if nothing
    listens there."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return None
    finally:
        conn.close()


def caddy_pid(hive_env) -> int | None:
    found = PreviewPaths.of(hive_env.home).process()
    return found[0] if found else None


def listening(pid: int) -> set[str]:
    """The TCP addresses `pid` listens on."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def spawn(hive_env, repo: Path, *names: str) -> None:
    for name in names:
        done = run_stem(hive_env.env, "spawn", name, "--repo", str(repo))
        assert done.returncode == 0, done.stderr


@pytest.mark.root
def test_two_colonies_on_port_3000_are_each_reached_by_name_through_the_one_port(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    spawn(hive_env, repo, "a", "b")
    port = preview_port(hive_env)
    rows = listed(hive_env)
    # A spawn returns with its URLs in place.
    assert rows["a"]["preview"] == {"web": f"http://web-a.localhost:{port}/"}
    assert rows["b"]["preview"] == {"web": f"http://web-b.localhost:{port}/"}
    assert through(port, "web-a.localhost") == (200, "I am a\n")
    assert through(port, "web-b.localhost") == (200, "I am b\n")
    status, body = through(port, "web-c.localhost") or (0, "")
    assert status == 404 and "stem ls --json" in body
    # One Caddy for the hive, detached, on the loopback port only: its admin API is a 0600 Unix socket.
    pid = caddy_pid(hive_env)
    assert pid is not None
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) == pid and stat[4] == "0"  # its own session, no terminal
    assert listening(pid) == {f"127.0.0.1:{port}"}
    paths = PreviewPaths.of(hive_env.home)
    assert oct(paths.admin.stat().st_mode & 0o777) == "0o600"
    assert oct(paths.folder.stat().st_mode & 0o777) == "0o700"
    assert f"web at http://web-a.localhost:{port}/" in run_stem(hive_env.env, "logs", "a").stdout
    assert preview.urls(hive_env.home, "b") == {"b": {"web": f"http://web-b.localhost:{port}/"}}


def test_names_at_their_limits_make_a_valid_dns_label_that_stays_unique():
    """A 32-character service of a 32-character colony made a 65-character label, which browsers refuse (a DNS label
    is at most 63): the long one keeps both names' starts and ends with a hash of the pair, so the pairs that
    shortening alone would make alike stay apart."""
    service, colony = "s" * 32, "c" * 32
    labels = {
        preview.preview_host(c, s).removesuffix(".localhost")
        for c, s in [(colony, service), (colony[:-1] + "d", service), (colony, service[:-1] + "t"), (colony, "w")]
    }
    assert len(labels) == 4 and all(len(label) <= 63 for label in labels)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", label) for label in labels)
    label = preview.preview_host(colony, service).removesuffix(".localhost")
    assert label.startswith("s" * 20) and "c" * 20 in label
    assert preview.preview_host("alpha", "web") == "web-alpha.localhost"  # short names: as they always were
    assert preview.preview_host("c" * 30, "s" * 32) == f"{'s' * 32}-{'c' * 30}.localhost"  # 63 exactly: whole


def test_a_service_name_with_an_underscore_makes_a_valid_dns_label_apart_from_its_hyphen_twin():
    """`_` is allowed in a service name and in no DNS label: `api_v1` is previewed at `api-v1-<colony>-<hash>`, not at
    a name resolvers refuse, nor at `api-v1`'s."""
    labels = [
        preview.preview_host(colony, service).removesuffix(".localhost")
        for colony, service in [("alpha", "api_v1"), ("alpha", "api-v1"), ("alpha", "a_"), ("c" * 32, "s_" * 16)]
    ]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", label) and len(label) <= 63 for label in labels), labels
    assert len(set(labels)) == len(labels)
    assert labels[0].startswith("api-v1-alpha-") and labels[1] == "api-v1-alpha"


@pytest.mark.root
@pytest.mark.parametrize(("service", "colony"), [("w" * 32, "a" * 32), ("api_v1", "alpha")], ids=["long", "underscore"])
def test_a_service_whose_name_is_no_dns_label_is_reached_through_the_label_made_of_it(
    hive_env, tmp_path, service, colony
):
    """The label made of a service and colony too long for one (shortened) or a service name with `_` is what Caddy
    routes, what `stem ls` and the log show, and it reaches the service."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE.replace("[services.web]", f"[services.{service}]"))
    spawn(hive_env, repo, colony)
    port = preview_port(hive_env)
    (url,) = listed(hive_env)[colony]["preview"].values()
    host = url.removeprefix("http://").split(":")[0]
    assert host.endswith(".localhost") and len(host.split(".")[0]) <= 63, host
    assert host == preview.preview_host(colony, service)
    assert through(port, host) == (200, f"I am {colony}\n")
    assert f"{service} at {url}" in run_stem(hive_env.env, "logs", colony).stdout


@pytest.mark.root
def test_a_service_with_preview_off_gets_no_route(hive_env, tmp_path):
    """A database or queue listens on a port but speaks no HTTP: `preview = false` keeps it out of the proxy (no
    URL in `stem ls`, the log or the UI), while it is still ready by its port."""
    fake_agent_config(hive_env)
    db = '[services.db]\ncommand = "exec python3 -m http.server 5432"\nport = 5432\npreview = false\n'
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE + db)
    spawn(hive_env, repo, "a")
    port = preview_port(hive_env)
    row = listed(hive_env)["a"]
    assert row["preview"] == {"web": f"http://web-a.localhost:{port}/"}
    assert row["services"]["db"] == "ready"
    assert (through(port, "db-a.localhost") or (0, ""))[0] == 404
    log = run_stem(hive_env.env, "logs", "a").stdout
    assert f"web at http://web-a.localhost:{port}/" in log and "db-a.localhost" not in log


@pytest.mark.root
def test_the_route_goes_when_the_service_stops_and_returns_when_it_starts(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    spawn(hive_env, repo, "a", "b")
    port = preview_port(hive_env)
    worktree = Path(listed(hive_env)["a"]["worktree"])

    # A restart: the route goes with the old process and comes back once the new one is ready.
    async def restart() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.restart_service("a", "web")
        finally:
            await hive.close()

    (worktree / "hold").write_text("")
    asyncio.run(restart())
    wait_for(lambda: "a" not in preview.urls(hive_env.home), what="a's route to go while web restarts")
    assert (through(port, "web-a.localhost") or (0, ""))[0] == 404
    assert through(port, "web-b.localhost") == (200, "I am b\n")  # the other colony's route is untouched
    (worktree / "hold").unlink()
    wait_for(lambda: through(port, "web-a.localhost") == (200, "I am a\n"), what="a's route back after the restart")

    # A stop: the route goes at once; the other colony keeps its route and the hive keeps its Caddy.
    caddy = caddy_pid(hive_env)
    assert run_stem(hive_env.env, "stop", "a").returncode == 0
    assert listed(hive_env)["a"]["preview"] == {}
    assert (through(port, "web-a.localhost") or (0, ""))[0] == 404
    assert through(port, "web-b.localhost") == (200, "I am b\n")
    assert caddy_pid(hive_env) == caddy
    assert run_stem(hive_env.env, "start", "a").returncode == 0
    assert listed(hive_env)["a"]["preview"] == {"web": f"http://web-a.localhost:{port}/"}
    assert through(port, "web-a.localhost") == (200, "I am a\n")

    # The last colony to stop takes the hive's Caddy with it; a start brings both back.
    for name in ("a", "b"):
        assert run_stem(hive_env.env, "stop", name).returncode == 0
    assert caddy is not None and not alive(caddy) and caddy_pid(hive_env) is None
    assert through(port, "web-b.localhost") is None
    assert run_stem(hive_env.env, "start", "b").returncode == 0
    assert through(port, "web-b.localhost") == (200, "I am b\n")


def routed_colonies_and_caddy_killed(hive_env, tmp_path) -> tuple[int, int]:
    """Colonies a and b, each with a routed web service, and then the hive's Caddy killed -9: the preview port
    and the dead Caddy's pid."""
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    spawn(hive_env, repo, "a", "b")
    caddy = caddy_pid(hive_env)
    assert caddy is not None
    os.kill(caddy, signal.SIGKILL)
    wait_for(lambda: not alive(caddy), what="Caddy to die")
    return preview_port(hive_env), caddy


@pytest.mark.root
def test_a_caddy_killed_under_running_colonies_comes_back_with_their_routes(hive_env, tmp_path):
    port, caddy = routed_colonies_and_caddy_killed(hive_env, tmp_path)
    assert through(port, "web-a.localhost") is None

    async def restart() -> None:
        hive = Hive(hive_env.home, prefix=hive_env.prefix, pool=hive_env.pool)
        try:
            await hive.restart_service("b", "web")
        finally:
            await hive.close()

    asyncio.run(restart())  # b's web gets ready again: its host starts a new Caddy
    wait_for(lambda: through(port, "web-b.localhost") == (200, "I am b\n"), what="b's route on a new Caddy")
    assert through(port, "web-a.localhost") == (200, "I am a\n")  # a's route came back with it
    assert caddy_pid(hive_env) not in (None, caddy)


@pytest.mark.root
def test_a_caddy_killed_comes_back_by_itself_with_every_route(hive_env, tmp_path):
    """Nothing else happens after the kill: the colonies' hosts notice within their guard's interval (10 s) and
    start Caddy again, each giving its routes, and the log says so."""
    port, caddy = routed_colonies_and_caddy_killed(hive_env, tmp_path)
    back = {"web-a.localhost": (200, "I am a\n"), "web-b.localhost": (200, "I am b\n")}
    wait_for(lambda: all(through(port, h) == want for h, want in back.items()), timeout=30, what="both routes back")
    assert caddy_pid(hive_env) not in (None, caddy)
    said = run_stem(hive_env.env, "logs", "a").stdout + run_stem(hive_env.env, "logs", "b").stdout
    assert "the preview proxy had ended: started again" in said, said


def three_routed_colonies(hive_env, tmp_path) -> tuple[int, int]:
    """Colonies a, b and c, each with a routed web service: the preview port and the hive's Caddy's pid."""
    fake_agent_config(hive_env)
    spawn(hive_env, make_repo(tmp_path / "repo", colony_toml=SERVICE), "a", "b", "c")
    caddy = caddy_pid(hive_env)
    assert caddy is not None
    return preview_port(hive_env), caddy


@pytest.mark.root
def test_destroy_and_gc_leave_no_route_and_no_caddy(hive_env, tmp_path):
    port, caddy = three_routed_colonies(hive_env, tmp_path)

    assert run_stem(hive_env.env, "destroy", "--force", "a").returncode == 0
    assert set(preview.urls(hive_env.home)) == {"b", "c"}

    # A host killed -9 cannot remove its routes: gc removes the routes of a colony without a running host.
    host = host_pid(hive_env, "b")
    assert host is not None
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: not alive(host), what="b's host to die")
    gc = run_stem(hive_env.env, "gc")
    assert gc.returncode == 0, gc.stderr
    assert "removed preview route web-b.localhost (b has no running host)" in gc.stdout
    assert set(preview.urls(hive_env.home)) == {"c"}

    # Destroying the last colony with a host takes the hive's Caddy with it.
    assert run_stem(hive_env.env, "destroy", "--force", "c").returncode == 0
    assert not alive(caddy) and caddy_pid(hive_env) is None
    assert through(port, "web-c.localhost") is None

    # A Caddy left without any colony host (its starter died right after starting it) goes with `stem gc`.
    preview.ensure_running(hive_env.home, port)
    left = caddy_pid(hive_env)
    assert left is not None
    gc = run_stem(hive_env.env, "gc")
    assert "removed the preview proxy (caddy; no colony host runs)" in gc.stdout
    assert not alive(left) and not PreviewPaths.of(hive_env.home).running()


@pytest.mark.root
def test_a_stop_of_several_colonies_killed_midway_leaves_no_route_once_the_next_command_finishes_it(hive_env, tmp_path):
    """`stem stop a b` leaves the routes to the end of the batch; killed -9 before that, the next stem command
    finishes the stops (the colonies are stopped) and their routes go too, not only at `stem gc`."""
    port, _caddy = three_routed_colonies(hive_env, tmp_path)
    killed = run_stem(dict(hive_env.env, STEM_FAULT_KILL_AT="stopping"), "stop", "a", "b")
    assert killed.returncode == -signal.SIGKILL
    rows = listed(hive_env)  # `stem ls`: finishes what the killed stop left
    assert (rows["a"]["state"], rows["b"]["state"], rows["c"]["state"]) == ("stopped", "stopped", "running")
    assert set(preview.urls(hive_env.home)) == {"c"}
    assert (through(port, "web-a.localhost") or (0, ""))[0] == 404
    assert through(port, "web-c.localhost") == (200, "I am c\n")


@pytest.mark.root
def test_stopping_several_colonies_at_once_removes_their_routes_and_the_last_takes_caddy(hive_env, tmp_path):
    """One `stem stop` of several names removes their routes in one change of Caddy's config (the hosts leave
    them to it); the colony still running keeps its route, and stopping it too takes Caddy along."""
    port, caddy = three_routed_colonies(hive_env, tmp_path)
    stopped = run_stem(hive_env.env, "stop", "a", "b")
    assert stopped.returncode == 0, stopped.stderr
    assert set(preview.urls(hive_env.home)) == {"c"}
    assert through(port, "web-a.localhost")[0] == 404
    assert through(port, "web-c.localhost") == (200, "I am c\n")
    assert caddy_pid(hive_env) == caddy
    assert run_stem(hive_env.env, "stop", "c").returncode == 0
    wait_for(lambda: not alive(caddy), what="Caddy to go with the last colony host")
    assert caddy_pid(hive_env) is None
    # Each host ended its service as stopped: the service's last state asked its closed preview for nothing (it
    # raised there, and the service was reported crashed with a supervisor error at every stop).
    for name in ("a", "b", "c"):
        host_log = (hive_env.home / "colonies" / name / "host.log").read_text()
        assert "supervisor of" not in host_log and "Traceback" not in host_log, host_log


@pytest.mark.root
def test_a_caddy_that_cannot_start_leaves_the_services_running_and_says_why(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    port = preview_port(hive_env)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        spawn(hive_env, repo, "a")
        rec = listed(hive_env)["a"]
        assert rec["services"] == {"web": "ready"} and rec["preview"] == {}
        assert http_get(f"http://{rec['ip']}:3000/whoami.txt") == "I am a\n"
        why = f"port {port} on 127.0.0.1 is in use by another program"
        assert why in run_stem(hive_env.env, "logs", "a").stdout
        assert why in (preview.problem(hive_env.home) or "")
        assert caddy_pid(hive_env) is None
    finally:
        taken.close()
    # Once the port is free, the next service to get ready starts Caddy.
    assert run_stem(hive_env.env, "stop", "a").returncode == 0
    assert run_stem(hive_env.env, "start", "a").returncode == 0
    assert through(port, "web-a.localhost") == (200, "I am a\n")
    assert preview.problem(hive_env.home) is None


@pytest.mark.root
def test_preview_port_zero_turns_preview_off(hive_env, tmp_path):
    fake_agent_config(hive_env)
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    env = {**hive_env.env, "STEM_PREVIEW_PORT": "0"}
    done = run_stem(env, "spawn", "a", "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    rows = json.loads(run_stem(env, "ls", "--json").stdout)
    assert rows[0]["services"] == {"web": "ready"} and rows[0]["preview"] == {}
    assert caddy_pid(hive_env) is None and not PreviewPaths.of(hive_env.home).folder.exists()


@pytest.mark.root
def test_two_hives_that_set_no_preview_port_each_get_their_own(hive_env, tmp_path):
    """Two STEM_HOMEs on one machine, neither setting a port: the first hive's claim takes 8900 (or the first no
    other hive's claim has), the second the next one, each kept from one command to the next, and each hive's
    Caddy serves its own colonies."""
    repo = make_repo(tmp_path / "repo", colony_toml=SERVICE)
    hives = [hive_env, HiveEnv(tmp_path / "second")]
    try:
        ports = []
        for hive, name in zip(hives, ("a", "b"), strict=True):
            del hive.env["STEM_PREVIEW_PORT"]
            fake_agent_config(hive)
            spawn(hive, repo, name)
            url = listed(hive)[name]["preview"]["web"]
            port = int(url.rsplit(":", 1)[1].rstrip("/"))
            assert port == claims.preview_port(hive.home) and port in range(8900, 9000)
            assert json.loads((claims.CLAIMS_DIR / hive.prefix).read_text())["preview"] == str(port)
            ports.append(port)
        assert ports[0] != ports[1]
        assert through(ports[0], "web-a.localhost") == (200, "I am a\n")
        assert through(ports[1], "web-b.localhost") == (200, "I am b\n")
        assert run_stem(hives[1].env, "ls").returncode == 0
        assert claims.preview_port(hives[1].home) == ports[1]  # kept
    finally:
        hives[1].cleanup()


@pytest.mark.root
def test_a_hive_that_sets_its_preview_port_claims_that_port(hive_env, tmp_path):
    """A hive whose STEM_PREVIEW_PORT sets the port records that port in its claim, not one it chose and does not
    use: a hive that sets none does not choose the port the first uses, and the first keeps no chosen port."""
    taken = {claim.preview for claim in claims.held() if claim.home != str(hive_env.home.resolve())}
    wanted = next(port for port in range(8900, 9000) if port not in taken)  # what a new hive would choose
    hive_env.env["STEM_PREVIEW_PORT"] = str(wanted)
    assert run_stem(hive_env.env, "ls").returncode == 0
    assert json.loads((claims.CLAIMS_DIR / hive_env.prefix).read_text())["preview"] == str(wanted)
    remembered = hive_env.home / claims.REMEMBERED
    assert not remembered.exists() or "preview" not in json.loads(remembered.read_text())
    second = HiveEnv(tmp_path / "second")
    try:
        del second.env["STEM_PREVIEW_PORT"]
        assert run_stem(second.env, "ls").returncode == 0
        chosen = claims.preview_port(second.home)
        assert chosen != wanted and chosen in range(8900, 9000)
    finally:
        second.cleanup()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[preview]\nport = 70000\n", "config.toml:2: [preview] port: must be between 0 and 65535 (got 70000)"),
        ("[preview]\nhost = 'x'\n", "[preview] host"),
    ],
)
def test_the_preview_port_setting_is_checked(tmp_path, text, error):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert error in str(caught.value)
    path.write_text("[preview]\nport = 8901\n")
    assert load_settings(path).preview_port == 8901
