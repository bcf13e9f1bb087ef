"""The egress policy, the colony's resolvers and proxies, and the firewall table, without the kernel."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import dns
from core.config import parse_colony_config
from core.egress import ALLOW, NAT, NONE, Egress, EgressError, EgressInForce, parse_egress, proxy_env, proxy_forwards
from core.errors import ConfigError
from core.firewall import ColonyRules, TablePlan, peer_pairs, render
from core.settings import load_settings

RESPONDER = str(Path(__file__).parent / "dns_responder.py")


def test_policies_parse_and_normalise() -> None:
    assert parse_egress("nat") == Egress(NAT)
    assert parse_egress("none") == Egress(NONE)
    policy = parse_egress(["10.1.2.3", "192.168.0.0/16", "PyPI.org.", "10.1.2.3", "registry.npmjs.org"])
    assert policy == Egress(ALLOW, ("10.1.2.3/32", "192.168.0.0/16", "pypi.org", "registry.npmjs.org"))
    assert policy.networks == ("10.1.2.3/32", "192.168.0.0/16")
    assert policy.names == ("pypi.org", "registry.npmjs.org")
    assert parse_egress([]) == Egress(ALLOW, ())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("open", "must be 'nat', 'none' or a list of addresses and host names (got 'open')"),
        (True, "must be 'nat', 'none' or a list of addresses and host names (got bool)"),
        (["::1"], "'::1': colonies have IPv4 only; give an IPv4 address, a CIDR or a host name"),
        (["10.0.0.300"], "'10.0.0.300' is not an IPv4 address or CIDR"),
        (["0.0.0.0/0"], "'0.0.0.0/0' is everything: use egress = 'nat' instead"),
        (["bad name!"], "'bad name!' is neither an IPv4 address, a CIDR nor a host name"),
        ([3], "list entries must be addresses or host names (got 3)"),
    ],
)
def test_bad_policies_say_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(EgressError) as info:
        parse_egress(value)
    assert str(info.value).startswith(message)


def test_colony_toml_network_errors_name_file_line_and_key() -> None:
    def error(text: str) -> str:
        with pytest.raises(ConfigError) as info:
            parse_colony_config(textwrap.dedent(text), Path("colony.toml"))
        return str(info.value)

    assert error('[network]\negress = ["x..y"]\n') == (
        "colony.toml:2: [network] egress: 'x..y' is neither an IPv4 address, a CIDR nor a host name"
    )
    assert error("[network]\nhost_ports = [70000]\n") == (
        "colony.toml:2: [network] host_ports[0]: must be between 1 and 65535 (got 70000)"
    )
    assert error("[network]\nhost_port = [1]\n").startswith(
        "colony.toml:2: [network] host_port: unknown key; did you mean 'host_ports'?"
    )


def test_the_users_network_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[network]\negress = ["pypi.org"]\ndns = ["9.9.9.9"]\nresolv_conf = "/tmp/r.conf"\n')
    settings = load_settings(config)
    assert settings.egress == Egress(ALLOW, ("pypi.org",))
    assert settings.dns == ("9.9.9.9",)
    assert settings.resolv_conf == Path("/tmp/r.conf")
    config.write_text('[network]\ndns = ["127.0.0.53"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value).endswith(
        "[network] dns[0]: 127.0.0.53 is loopback: a colony's loopback is its own; give a reachable server"
    )


def resolv(tmp_path: Path, text: str, name: str = "resolv.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_colony_gets_the_hosts_reachable_resolvers(tmp_path: Path) -> None:
    host = resolv(tmp_path, "# comment\nnameserver 10.0.0.2\nnameserver ::1\nsearch a.test b.test\noptions ndots:2\n")
    plan = dns.plan((), host, tmp_path / "none")
    assert plan == dns.DnsPlan(("10.0.0.2",), None, ("a.test", "b.test"), ("ndots:2",))
    assert dns.resolv_conf_text(plan, "10.200.0.1", "alpha").splitlines()[1:] == [
        "nameserver 10.0.0.2",
        "search a.test b.test",
        "options ndots:2",
    ]
    # The user's [network] dns wins.
    assert dns.plan(("9.9.9.9",), host).servers == ("9.9.9.9",)


def test_a_systemd_resolved_stub_gives_its_upstream_servers(tmp_path: Path) -> None:
    stub = resolv(tmp_path, "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
    upstream = resolv(tmp_path, "nameserver 192.168.1.1\nnameserver fe80::1\n", "upstream.conf")
    plan = dns.plan((), stub, upstream)
    assert (plan.servers, plan.stub) == (("192.168.1.1",), None)
    assert "trust-ad" not in dns.resolv_conf_text(plan, "10.200.0.1", "a")


def test_only_a_loopback_resolver_is_reached_through_the_colonys_host_address(tmp_path: Path) -> None:
    plan = dns.plan((), resolv(tmp_path, "nameserver 127.0.0.1\n"), tmp_path / "missing")
    assert plan.stub == "127.0.0.1"
    assert plan.servers_for("10.200.0.5") == ("10.200.0.5",)
    assert dns.plan((), tmp_path / "no-resolv-conf", tmp_path / "missing").stub == "127.0.0.1"


def test_resolve_a_asks_the_given_server(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, RESPONDER, "--bind", "127.0.0.1", "--port", "0", "x.test=192.0.2.9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        assert dns._query("x.test", "127.0.0.1", 2.0, port) == ("192.0.2.9",)
        assert dns._query("y.test", "127.0.0.1", 2.0, port) == ()
        assert dns.resolve_a("x.test", ["127.0.0.1"], timeout=0.2) == ()  # nothing on :53 there: no answer
    finally:
        server.kill()
        server.wait()


def test_proxy_variables_pass_and_a_loopback_proxy_moves_to_the_host_address() -> None:
    environ = {
        "HTTP_PROXY": "http://127.0.0.1:3128",
        "https_proxy": "http://user:secret@localhost:8888/",
        "ALL_PROXY": "socks5://proxy.corp.invalid:1080",
        "no_proxy": "localhost,127.0.0.1",
        "UNRELATED": "x",
    }
    assert proxy_env(environ, "10.200.0.1") == {
        "HTTP_PROXY": "http://10.200.0.1:3128",
        "https_proxy": "http://user:secret@10.200.0.1:8888/",
        "ALL_PROXY": "socks5://proxy.corp.invalid:1080",
        "no_proxy": "localhost,127.0.0.1",
    }
    assert proxy_forwards(environ) == (3128, 8888)
    assert proxy_forwards({"HTTP_PROXY": "http://127.0.0.1"}) == (80,)


def test_the_table_has_nat_for_the_pool_and_chains_per_colony() -> None:
    pool = ipaddress.IPv4Network("10.200.0.0/16")
    listed = EgressInForce(parse_egress(["pypi.org"]), ("151.101.0.223",), (), (5432,), (3128,))
    plan = TablePlan(
        "stem",
        pool,
        (
            ColonyRules("stem0", "10.200.0.2", "10.200.0.1", EgressInForce()),
            ColonyRules("stem1", "10.200.0.6", "10.200.0.5", EgressInForce(Egress(NONE))),
            ColonyRules("stem2", "10.200.0.10", "10.200.0.9", listed),
        ),
        ("10.0.0.2",),
        None,
    )
    script = render(plan)
    assert script.startswith("table ip stem\ndelete table ip stem\n")  # replaces the old table atomically
    assert "ip saddr 10.200.0.0/16 ip daddr != 10.200.0.0/16 masquerade" in script
    assert 'iifname "stem0" jump egress' not in script  # nat: its egress is not restricted
    assert 'iifname "stem0" jump host0' in script  # but what it may reach on the host is, as for every colony
    assert 'iifname "stem1" jump egress1' in script and 'iifname "stem1" jump host1' in script
    assert "ip daddr { 151.101.0.223 } accept" in script
    assert "ip daddr { 10.0.0.2 } meta l4proto { tcp, udp } th dport 53 accept" in script
    assert 'iifname "stem2" ip daddr 10.200.0.9 tcp dport 3128 dnat to 127.0.0.1:3128' in script
    assert "th dport { 5432 } accept" in script


def test_colonies_reach_each_other_only_when_both_list_the_other_as_peers() -> None:
    def colony(name: str, ip: str, *peers: str) -> ColonyRules:
        return ColonyRules(f"v{name}", ip, "10.200.0.1", EgressInForce(peers=peers), name)

    a, b, c, d = (
        colony("a", "10.200.0.2", "b", "c"),
        colony("b", "10.200.0.6", "a"),
        colony("c", "10.200.0.10"),
        colony("d", "10.200.0.14", "d"),
    )
    assert peer_pairs((a, b, c, d)) == [("10.200.0.2", "10.200.0.6"), ("10.200.0.6", "10.200.0.2")]  # c did not agree
    script = render(TablePlan("stem", ipaddress.IPv4Network("10.200.0.0/16"), (a, b, c, d), (), None))
    forward = script.split("chain forward {", 1)[1].split("}", 1)[0]
    lines = [line.strip() for line in forward.splitlines() if line.strip()]
    # Replies first, then the agreed pairs, then every other colony-to-colony packet dropped.
    assert lines[1:5] == [
        "ct state established,related accept",
        "ip saddr 10.200.0.2 ip daddr 10.200.0.6 accept",
        "ip saddr 10.200.0.6 ip daddr 10.200.0.2 accept",
        "ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 counter drop",
    ]
    host0 = script.split("chain host0 {", 1)[1].split("}", 1)[0]
    assert "counter drop" in host0 and "dport" not in host0  # no host ports, no resolver on the host: nothing
