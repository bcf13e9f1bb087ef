"""The hive's network policy for real: colonies do not reach each other unless both agree (`[network] peers`), and
reach the host only on the ports they are allowed; a change to `[network]` applies to a running colony at once."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import git, http_get, make_repo, run_stem, wait_for
from test_host import host_pid

pytestmark = pytest.mark.root

SERVICE = """\
[services.web]
command = "python3 -m http.server 3000"
port = 3000
ready = "tcp"
"""

# Connects to each host:port given; prints {"host:port": "open" | "blocked" | "refused"}. A dropped SYN times out.
CONNECT = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        out[target] = "open"
    except socket.timeout:
        out[target] = "blocked"
    except ConnectionRefusedError:
        out[target] = "refused"
print(json.dumps(out))
"""


def colony_repo(tmp_path: Path, name: str, network: str = "") -> Path:
    return make_repo(tmp_path / f"repo-{name}", colony_toml=SERVICE + (f"\n[network]\n{network}\n" if network else ""))


def spawn(hive_env: HiveEnv, tmp_path: Path, name: str, network: str = "") -> dict:
    result = run_stem(hive_env.env, "spawn", name, "--repo", str(colony_repo(tmp_path, name, network)))
    assert result.returncode == 0, result.stderr
    return listed(hive_env)[name]


def listed(hive_env: HiveEnv) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(run_stem(hive_env.env, "ls", "--json").stdout)}


def connect(hive_env: HiveEnv, name: str, *targets: str) -> dict[str, str]:
    result = run_stem(hive_env.env, "exec", name, "--", "python3", "-c", CONNECT, *targets)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on the host's 0.0.0.0 (every address, the colonies' gateways included); its port."""

    class Hello(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"hello from the host\n")

    server = socketserver.ThreadingTCPServer(("0.0.0.0", 0), Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="host-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_colony_reaches_neither_another_colony_nor_the_host_beyond_its_ports(hive_env, tmp_path, host_server):
    port = host_server
    a = spawn(hive_env, tmp_path, "a")
    b = spawn(hive_env, tmp_path, "b")
    c = spawn(hive_env, tmp_path, "c", f"host_ports = [{port}]")
    # The host reaches every colony's service; colonies do not reach each other's.
    assert "Directory listing" in http_get(f"http://{b['ip']}:3000/")
    seen = connect(hive_env, "a", f"{b['ip']}:3000", f"{c['ip']}:3000", f"{a['host_ip']}:{port}")
    assert seen == {f"{b['ip']}:3000": "blocked", f"{c['ip']}:3000": "blocked", f"{a['host_ip']}:{port}": "blocked"}
    # c may reach that one host port, through its own gateway, and nothing else of the host's.
    seen = connect(hive_env, "c", f"{c['host_ip']}:{port}", f"{c['host_ip']}:22", f"{a['ip']}:3000")
    assert seen == {f"{c['host_ip']}:{port}": "open", f"{c['host_ip']}:22": "blocked", f"{a['ip']}:3000": "blocked"}
    # Its own service, through its own address, is its own business.
    assert connect(hive_env, "a", f"{a['ip']}:3000") == {f"{a['ip']}:3000": "open"}
    assert listed(hive_env)["c"]["egress"]["host_ports"] == [port]


def test_peers_reach_each_other_only_when_both_agree(hive_env, tmp_path):
    x = spawn(hive_env, tmp_path, "x", 'peers = ["y"]')
    y = spawn(hive_env, tmp_path, "y", 'peers = ["x", "z"]')
    z = spawn(hive_env, tmp_path, "z", 'peers = ["x"]')  # x does not list z; y lists z but z does not list y
    assert connect(hive_env, "x", f"{y['ip']}:3000", f"{z['ip']}:3000") == {
        f"{y['ip']}:3000": "open",
        f"{z['ip']}:3000": "blocked",
    }
    assert connect(hive_env, "y", f"{x['ip']}:3000", f"{z['ip']}:3000") == {
        f"{x['ip']}:3000": "open",
        f"{z['ip']}:3000": "blocked",
    }
    assert connect(hive_env, "z", f"{x['ip']}:3000", f"{y['ip']}:3000") == {
        f"{x['ip']}:3000": "blocked",
        f"{y['ip']}:3000": "blocked",
    }
    assert listed(hive_env)["x"]["egress"]["peers"] == ["y"]


def test_a_peers_edit_applies_to_running_colonies_without_a_restart(hive_env, tmp_path):
    p = spawn(hive_env, tmp_path, "p")
    q = spawn(hive_env, tmp_path, "q", 'peers = ["p"]')
    hosts = {n: host_pid(hive_env, n) for n in ("p", "q")}
    assert connect(hive_env, "p", f"{q['ip']}:3000") == {f"{q['ip']}:3000": "blocked"}
    toml = Path(p["worktree"]) / "colony.toml"
    toml.write_text(toml.read_text() + '\n[network]\npeers = ["q"]\n')
    wait_for(
        lambda: connect(hive_env, "p", f"{q['ip']}:3000") == {f"{q['ip']}:3000": "open"},
        timeout=15,
        what="p to reach q once both list each other",
    )
    assert {n: host_pid(hive_env, n) for n in ("p", "q")} == hosts  # applied in place: no host was restarted
    git(Path(p["worktree"]), "checkout", "--", "colony.toml")  # and back: the pair is closed again
    wait_for(
        lambda: connect(hive_env, "p", f"{q['ip']}:3000") == {f"{q['ip']}:3000": "blocked"},
        timeout=15,
        what="p to be cut off again",
    )
