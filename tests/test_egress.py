"""Egress for real: a namespace the test makes plays the outside world; colonies reach it through the host's NAT.

The world has no route back to the colonies' pool, so an answer arrives only if the host masquerades. Its DNS
server answers names only this test knows; the hive reads "the host's resolvers" from a resolv.conf the test
writes (`[network] resolv_conf`), as it would read /etc/resolv.conf.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HiveEnv
from helpers import http_get, make_repo, run_stem, stem_cmd, wait_for
from test_serve import Serve

from core import firewall

pytestmark = pytest.mark.root

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
RESPONDER = str(Path(__file__).parent / "dns_responder.py")

PROBE = r"""
import json, socket, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(url):
    try:
        return opener.open(url, timeout=2).read().decode().strip()
    except OSError as exc:
        return "error: " + type(exc).__name__
out = {}
try:
    out["name"] = socket.gethostbyname("outside.test")
except OSError as exc:
    out["name"] = "error: " + type(exc).__name__
for key, address in zip(("world", "other"), sys.argv[1:]):
    out[key] = get(f"http://{address}:8080/hello")
print(json.dumps(out))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def free_test_net() -> ipaddress.IPv4Network:
    """A /29 of TEST-NET-2 or -3 that no route of this machine covers (the default route aside)."""
    routes = json.loads(subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout)
    taken = [ipaddress.ip_network(r["dst"]) for r in routes if r["dst"] != "default"]
    for _ in range(100):
        base = random.choice(["198.51.100.0/24", "203.0.113.0/24"])
        net = random.choice(list(ipaddress.IPv4Network(base).subnets(new_prefix=29)))
        if not any(net.overlaps(t) for t in taken):
            return net
    raise AssertionError("no free /29 in TEST-NET-2/3 on this machine")


class World:
    """The outside world: a namespace with two addresses, a web server on :8080 and a DNS server."""

    def __init__(self, prefix: str, tmp: Path) -> None:
        self.ns = self.link = f"{prefix}w"  # not `<prefix>-...` nor `<prefix><digits>`: never the hive's gc's
        net = free_test_net()
        hosts = list(net.hosts())
        self.gateway, self.ip, self.other = str(hosts[0]), str(hosts[1]), str(hosts[2])
        self.prefixlen = net.prefixlen
        self.www = tmp / "www"
        self.www.mkdir()
        (self.www / "hello").write_text("hello from outside\n")
        self.procs: list[subprocess.Popen[str]] = []

    def up(self) -> World:
        ip("netns", "add", self.ns)
        ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        ip("addr", "add", f"{self.gateway}/{self.prefixlen}", "dev", self.link)
        ip("link", "set", self.link, "up")
        for address in (self.ip, self.other):
            ip("-n", self.ns, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        self.web = self.run("python3", "-m", "http.server", "8080", "--directory", str(self.www))
        dns = self.run(sys.executable, RESPONDER, "--bind", self.ip, "outside.test=" + self.ip)
        assert dns.stdout is not None and dns.stdout.readline().startswith("ready")
        wait_for(lambda: http_get(f"http://{self.ip}:8080/hello"), timeout=15, what="the world's web server")
        return self

    def run(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def world(hive_env, tmp_path):
    w = World(hive_env.prefix, tmp_path).up()
    yield w
    w.down()


@pytest.fixture
def forwarding():
    """IP forwarding as it was before the test: the hive must put it back once it no longer needs it."""
    before = IP_FORWARD.read_text().strip()
    yield before
    if not any(p.name != "original" for p in firewall.FORWARD_DIR.glob("*")):
        IP_FORWARD.write_text(before + "\n")


def configure(hive_env: HiveEnv, tmp_path: Path, resolvers: str, extra: str = "") -> None:
    resolv = tmp_path / "host-resolv.conf"
    resolv.write_text(resolvers)
    config = Path(hive_env.env["XDG_CONFIG_HOME"]) / "stem" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[network]\nresolv_conf = "{resolv}"\n{extra}')


def spawn(hive_env: HiveEnv, name: str, repo: Path, **env: str) -> dict:
    result = run_stem({**hive_env.env, **env}, "spawn", name, "--repo", str(repo))
    assert result.returncode == 0, result.stderr
    return listed(hive_env, name)


def listed(hive_env: HiveEnv, name: str) -> dict:
    rows = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def netns_pids(hive_env: HiveEnv, name: str) -> list[str]:
    ns = f"{hive_env.prefix}-{name}"
    return subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()


def probe(hive_env: HiveEnv, name: str, *addresses: str) -> dict[str, str]:
    result = run_stem(hive_env.env, "exec", name, "--", "python3", "-c", PROBE, *addresses)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextlib.contextmanager
def loopback_resolver(world) -> Iterator[str]:
    """A DNS responder on a random address of the host's loopback (as systemd-resolved's 127.0.0.53 is), answering
    outside.test with the world's address; its address while it runs."""
    stub = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.53"
    responder = subprocess.Popen(
        [sys.executable, RESPONDER, "--bind", stub, "outside.test=" + world.ip],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert responder.stdout is not None and responder.stdout.readline().startswith("ready")
        yield stub
    finally:
        responder.kill()
        responder.wait()


def test_default_egress_reaches_the_outside_by_address_and_by_name(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\nsearch corp.invalid\n")
    repo = make_repo(tmp_path / "repo")
    rec = spawn(hive_env, "out", repo)
    assert rec["egress"]["mode"] == "nat"
    assert firewall.table_exists(hive_env.prefix)
    assert IP_FORWARD.read_text().strip() == "1"

    seen = probe(hive_env, "out", world.ip)
    assert seen == {"name": world.ip, "world": "hello from outside"}
    # The colony's resolv.conf lists what it can reach; the host's own /etc/resolv.conf is untouched.
    cat = run_stem(hive_env.env, "exec", "out", "--", "cat", "/etc/resolv.conf")
    assert f"nameserver {world.ip}" in cat.stdout and "search corp.invalid" in cat.stdout
    assert f"nameserver {world.ip}" not in Path("/etc/resolv.conf").read_text()

    assert run_stem(hive_env.env, "destroy", "out").returncode == 0
    assert not firewall.table_exists(hive_env.prefix)
    assert IP_FORWARD.read_text().strip() == forwarding
    assert not Path(f"/etc/netns/{hive_env.prefix}-out").exists()


def test_egress_none_lets_nothing_out(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
    repo = make_repo(tmp_path / "repo", colony_toml='[network]\negress = "none"\n')
    rec = spawn(hive_env, "sealed", repo)
    assert rec["egress"]["mode"] == "none"
    seen = probe(hive_env, "sealed", world.ip)
    assert seen["world"].startswith("error") and seen["name"].startswith("error"), seen
    # The host still reaches the colony (previews, readiness probes); it is only the colony that cannot leave.
    server = subprocess.Popen(
        [*stem_cmd(), "exec", "sealed", "--", "python3", "-m", "http.server", "3000"],
        env=hive_env.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: http_get(f"http://{rec['ip']}:3000/"), timeout=15, what="the colony's server")
    finally:
        assert run_stem(hive_env.env, "stop", "sealed").returncode == 0
        server.wait(timeout=10)
    assert not firewall.table_exists(hive_env.prefix)


def test_an_allow_list_reaches_only_what_it_names(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
    repo = make_repo(tmp_path / "repo", colony_toml='[network]\negress = ["outside.test"]\n')
    rec = spawn(hive_env, "narrow", repo)
    # The name was resolved through the colony's own resolver, which the list lets it reach too.
    assert rec["egress"]["addresses"] == [world.ip]
    seen = probe(hive_env, "narrow", world.ip, world.other)
    assert seen["name"] == world.ip
    assert seen["world"] == "hello from outside"
    assert seen["other"].startswith("error"), seen

    by_address = make_repo(tmp_path / "repo2", colony_toml=f'[network]\negress = ["{world.other}/32"]\n')
    spawn(hive_env, "narrow2", by_address)
    seen = probe(hive_env, "narrow2", world.ip, world.other)
    assert seen["other"] == "hello from outside"
    assert seen["world"].startswith("error"), seen
    assert seen["name"] == world.ip  # the colony's resolver stays reachable under a list


def test_a_resolver_on_the_host_loopback_is_reached_through_the_host_address(hive_env, tmp_path, world, forwarding):
    with loopback_resolver(world) as stub:
        configure(hive_env, tmp_path, f"nameserver {stub}\noptions edns0 trust-ad\n")
        rec = spawn(hive_env, "stubby", make_repo(tmp_path / "repo"))
        cat = run_stem(hive_env.env, "exec", "stubby", "--", "cat", "/etc/resolv.conf")
        assert f"nameserver {rec['host_ip']}" in cat.stdout
        assert probe(hive_env, "stubby", world.ip) == {"name": world.ip, "world": "hello from outside"}


def test_egress_none_resolves_no_name_through_a_loopback_resolver(hive_env, tmp_path, world, forwarding):
    # With a resolver on the host's loopback, the table let every colony reach it, "none" too: a sealed colony still
    # resolved names, and a resolver that recurses carries whatever it puts in them out (DNS as a way out).
    with loopback_resolver(world) as stub:
        configure(hive_env, tmp_path, f"nameserver {stub}\noptions timeout:1 attempts:1\n")
        spawn(hive_env, "sealed", make_repo(tmp_path / "repo", colony_toml='[network]\negress = "none"\n'))
        spawn(hive_env, "open", make_repo(tmp_path / "repo2"))
        seen = probe(hive_env, "sealed", world.ip)
        assert seen["name"].startswith("error") and seen["world"].startswith("error"), seen
        assert probe(hive_env, "open", world.ip)["name"] == world.ip  # the others still resolve through it


def test_a_policy_change_applies_without_restarting_the_colony(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
    toml = '[network]\negress = "none"\n\n[services.idle]\ncommand = "exec sleep 1000"\n'
    repo = make_repo(tmp_path / "repo", colony_toml=toml)
    spawn(hive_env, "live", repo)
    serve = Serve(hive_env.env)
    try:
        serve.wait_for_line("idle")
        pids = netns_pids(hive_env, "live")
        assert probe(hive_env, "live", world.ip)["world"].startswith("error")
        worktree = Path(listed(hive_env, "live")["worktree"])
        (worktree / "colony.toml").write_text(toml.replace('"none"', '"nat"'))
        wait_for(lambda: listed(hive_env, "live")["egress"]["mode"] == "nat", timeout=15, what="egress nat")
        assert probe(hive_env, "live", world.ip)["world"] == "hello from outside"
        assert set(pids) <= set(netns_pids(hive_env, "live"))  # nothing that ran was restarted
    finally:
        assert serve.stop() == 0
        run_stem(hive_env.env, "stop", "live")


def test_proxy_variables_are_passed_and_a_loopback_proxy_is_reached(hive_env, tmp_path, forwarding):
    port = random.randint(20000, 40000)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp_path / "via-proxy").write_text("proxied\n")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/via-proxy"), timeout=15, what="the host's proxy")
        env = {
            "HTTP_PROXY": f"http://127.0.0.1:{port}",
            "https_proxy": "http://user:pw@proxy.corp.invalid:3128",
            "NO_PROXY": "localhost,.internal",
        }
        spawn(hive_env, "prox", make_repo(tmp_path / "repo"), **env)
        shown = run_stem(
            {**hive_env.env, **env},
            "exec",
            "prox",
            "--",
            "sh",
            "-c",
            'echo "$HTTP_PROXY|$https_proxy|$NO_PROXY"; python3 -c "import os, urllib.request as u; '
            "o = u.build_opener(u.ProxyHandler({})); "
            "print(o.open(os.environ['HTTP_PROXY'] + '/via-proxy', timeout=3).read().decode().strip())\"",
        )
        host_ip = listed(hive_env, "prox")["host_ip"]
        assert shown.stdout.splitlines() == [
            f"http://{host_ip}:{port}|http://user:pw@proxy.corp.invalid:3128|localhost,.internal",
            "proxied",
        ], shown.stderr
    finally:
        proxy.kill()
        proxy.wait()


def test_a_host_firewall_that_drops_forwarding_is_named(hive_env, tmp_path, world, forwarding):
    table = f"{hive_env.prefix}fw"
    subprocess.run(
        ["nft", "-f", "-"],
        input=f"table ip {table} {{ chain FORWARD {{ type filter hook forward priority 10; policy drop; }}\n}}\n",
        text=True,
        check=True,
    )
    try:
        configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
        spawn(hive_env, "walled", make_repo(tmp_path / "repo"))
        log = run_stem(hive_env.env, "logs", "walled").stdout
        assert f"nft chain ip {table} FORWARD has policy drop" in log
        assert probe(hive_env, "walled", world.ip)["world"].startswith("error")  # the warning was right
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


def test_gc_removes_the_table_of_a_crashed_spawn_and_restores_forwarding(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
    repo = make_repo(tmp_path / "repo")
    crashed = run_stem({**hive_env.env, "STEM_FAULT_KILL_AT": "starting"}, "spawn", "crash", "--repo", str(repo))
    assert crashed.returncode == -signal.SIGKILL
    assert firewall.table_exists(hive_env.prefix)
    report = run_stem(hive_env.env, "gc")
    assert report.returncode == 0, report.stderr
    assert not firewall.table_exists(hive_env.prefix)
    assert IP_FORWARD.read_text().strip() == forwarding


def test_two_hives_keep_their_own_tables(hive_env, tmp_path, world, forwarding):
    other = HiveEnv(tmp_path / "second")
    try:
        (tmp_path / "second").mkdir(exist_ok=True)  # (HiveEnv made its home in it)
        configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
        configure(other, tmp_path / "second", f"nameserver {world.ip}\n")
        repo = make_repo(tmp_path / "repo")
        spawn(hive_env, "one", repo)
        spawn(other, "two", repo)
        assert firewall.table_exists(hive_env.prefix) and firewall.table_exists(other.prefix)
        assert run_stem(hive_env.env, "destroy", "one").returncode == 0
        assert not firewall.table_exists(hive_env.prefix) and firewall.table_exists(other.prefix)
        assert IP_FORWARD.read_text().strip() == "1"  # the other hive still needs it
        assert probe(other, "two", world.ip)["world"] == "hello from outside"
        assert run_stem(other.env, "destroy", "two").returncode == 0
        assert not firewall.table_exists(other.prefix)
        assert IP_FORWARD.read_text().strip() == forwarding
    finally:
        other.cleanup()
        firewall.remove(other.prefix)


def test_the_egress_in_force_shows_in_ls(hive_env, tmp_path, world, forwarding):
    configure(hive_env, tmp_path, f"nameserver {world.ip}\n", 'egress = ["10.99.0.0/16", "nowhere.test"]\n')
    rec = spawn(hive_env, "shown", make_repo(tmp_path / "repo"))
    assert rec["egress"] == {
        "mode": "allow",
        "allow": ["10.99.0.0/16", "nowhere.test"],
        "addresses": ["10.99.0.0/16"],
        "unresolved": ["nowhere.test"],
        "host_ports": [],
        "peers": [],
    }
    assert "nowhere.test did not resolve" in run_stem(hive_env.env, "logs", "shown").stdout


def test_default_egress_does_not_reach_the_clouds_metadata_address_but_a_list_naming_it_does(
    hive_env, tmp_path, world, forwarding
):
    # On a cloud machine 169.254.169.254 serves the instance's credentials to whoever asks: an agent under the
    # default egress reached it as it reaches anything. The world answers on it here, routed from the host.
    metadata = "169.254.169.254"
    ip("-n", world.ns, "addr", "add", f"{metadata}/32", "dev", "eth0")
    ip("route", "add", f"{metadata}/32", "dev", world.link)
    try:
        configure(hive_env, tmp_path, f"nameserver {world.ip}\n")
        spawn(hive_env, "cloud", make_repo(tmp_path / "repo"))
        seen = probe(hive_env, "cloud", world.ip, metadata)
        assert seen["world"] == "hello from outside"
        assert seen["other"].startswith("error"), seen
        listed = make_repo(tmp_path / "repo2", colony_toml=f'[network]\negress = ["{metadata}"]\n')
        spawn(hive_env, "asks", listed)
        assert probe(hive_env, "asks", world.ip, metadata)["other"] == "hello from outside"
    finally:
        subprocess.run(["ip", "route", "del", f"{metadata}/32", "dev", world.link], capture_output=True)
