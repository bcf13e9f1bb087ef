"""Two hives on one machine never harm each other: a prefix or an overlapping pool another hive has is refused with
one line, before anything is made or removed; pools no colony should use are refused."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest
from conftest import HiveEnv
from helpers import assert_refused, make_repo, netns_names, run_stem

from core import claims
from core.names import PREFIX_RE

pytestmark = pytest.mark.root


@pytest.fixture
def other(tmp_path):
    """A second hive on the machine (its own STEM_HOME), cleaned up like the test's own."""
    env = HiveEnv(tmp_path / "other")
    yield env
    env.cleanup()


def test_a_second_hive_with_the_same_prefix_is_refused_and_touches_nothing(hive_env, other, tmp_path):
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "mine", "--repo", str(repo)).returncode == 0
    before = netns_names(hive_env.prefix)
    other.prefix = hive_env.prefix  # STEM_HOME set in one shell and not in another: same prefix, two hives
    other.env["STEM_PREFIX"] = hive_env.prefix
    for args in (("spawn", "theirs", "--repo", str(repo)), ("gc",), ("ls",)):
        assert_refused(
            run_stem(other.env, *args), f"prefix {hive_env.prefix!r} belongs to the hive at", str(hive_env.home)
        )
    assert netns_names(hive_env.prefix) == before
    listed = json.loads(run_stem(hive_env.env, "ls", "--json").stdout)
    assert [(r["name"], r["state"]) for r in listed] == [("mine", "running")]
    other.prefix = "z" + other.prefix[1:]  # its cleanup must not touch the first hive's objects


def test_a_second_hive_whose_pool_overlaps_is_refused(hive_env, other, tmp_path):
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "mine", "--repo", str(repo)).returncode == 0
    other.env["STEM_POOL"] = str(hive_env.pool.supernet(new_prefix=16))
    assert_refused(run_stem(other.env, "spawn", "theirs", "--repo", str(repo)), "overlaps", str(hive_env.home))
    assert netns_names(other.prefix) == []


def test_the_claim_of_a_hive_that_is_gone_is_taken_over(hive_env, other, tmp_path):
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "ls").returncode == 0
    shutil.rmtree(hive_env.home)  # that hive is gone for good
    other.prefix = hive_env.prefix
    other.env["STEM_PREFIX"] = hive_env.prefix
    assert run_stem(other.env, "spawn", "heir", "--repo", str(repo)).returncode == 0
    claim = json.loads((claims.CLAIMS_DIR / hive_env.prefix).read_text())
    assert claim["home"] == str(other.home.resolve())


def test_gc_forgets_the_claims_of_hives_whose_home_is_gone(hive_env, other):
    # A removed STEM_HOME (a benchmark's temporary hive) left its claim under /run/stem until a reboot.
    assert run_stem(other.env, "ls").returncode == 0
    assert run_stem(hive_env.env, "ls").returncode == 0
    shutil.rmtree(hive_env.home)
    run = run_stem(other.env, "gc")  # another hive's gc: it sees every hive's claims
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "nothing to clean"  # of its own
    assert not (claims.CLAIMS_DIR / hive_env.prefix).exists()
    assert (claims.CLAIMS_DIR / other.prefix).exists()


def test_commands_that_only_read_make_no_hive_where_stem_home_does_not_exist(hive_env, tmp_path):
    """A typo in STEM_HOME: a command that only reads says what an empty hive would and makes nothing there; no home,
    no claim. A hive made there would keep its prefix, and after a reboot (claims live in /run) could take the
    default one from the user's own hive."""
    typo = tmp_path / "no-such-home"
    env = dict(hive_env.env, STEM_HOME=str(typo))
    del env["STEM_PREFIX"], env["STEM_POOL"]  # as in a user's shell: a hive made would choose and claim its own
    before = sorted(claims.CLAIMS_DIR.iterdir()) if claims.CLAIMS_DIR.exists() else []
    for args, code, out in (
        (("ls",), 0, "no colonies yet: stem spawn NAME --repo PATH"),
        (("ls", "--json"), 0, "[]"),
        (("gc",), 0, "nothing to clean"),
        (("merge", "--all"), 0, ""),
    ):
        run = run_stem(env, *args)
        assert (run.returncode, run.stdout.strip(), run.stderr) == (code, out, ""), args
    for args in (("stop", "web"), ("destroy", "web", "api"), ("exec", "web", "--", "true"), ("logs", "web")):
        assert_refused(run_stem(env, *args), "no colony named 'web' in this hive (see `stem ls`)")
    assert not typo.exists()
    assert (sorted(claims.CLAIMS_DIR.iterdir()) if claims.CLAIMS_DIR.exists() else []) == before


def test_gc_cleans_up_after_a_hive_whose_home_was_removed(hive_env):
    """The home is gone but its claim is not (the user removed the folder with colonies running): gc under that
    STEM_HOME still finds the hive's prefix and removes what it left in the kernel, then forgets the hive: the home
    it had to open for that is removed again, and the claim with it."""
    assert run_stem(hive_env.env, "ls").returncode == 0
    left = f"{hive_env.prefix}-ghost"
    subprocess.run(["ip", "netns", "add", left], check=True)
    try:
        shutil.rmtree(hive_env.home.parent)  # (the folder it was in too)
        run = run_stem(hive_env.env, "gc")
        assert run.returncode == 0, run.stderr
        assert f"removed network namespace {left} (not in the registry)" in run.stdout.splitlines()
        assert netns_names(hive_env.prefix) == []
        # and the hive is gone for good: no home made again, its claim forgotten (the prefix free for another)
        assert not hive_env.home.parent.exists()
        assert hive_env.prefix not in [claim.prefix for claim in claims.held()]
        again = run_stem(hive_env.env, "gc")
        assert (again.returncode, again.stdout) == (0, "nothing to clean\n")
        assert not hive_env.home.exists()
    finally:
        subprocess.run(["ip", "netns", "del", left], check=False, capture_output=True)


@pytest.mark.parametrize(
    ("pool", "why"),
    [
        ("0.0.0.0/0", "is wider than a /8"),
        ("127.0.0.0/16", "is not a range for hosts"),
        ("224.1.0.0/16", "is not a range for hosts"),
        ("169.254.0.0/16", "is not a range for hosts"),
        ("8.8.0.0/16", "is not a private range"),
    ],
)
def test_pools_no_colony_should_use_are_refused(hive_env, pool, why):
    env = {**hive_env.env, "STEM_POOL": pool}
    assert_refused(run_stem(env, "ls"), f"the pool {pool} {why}", "STEM_POOL")


def test_a_pool_over_the_hosts_own_network_is_refused(hive_env):
    lan = f"{hive_env.prefix}l"  # a network of the host's own, as a LAN would be (no dummy module here: a veth)
    subprocess.run(["ip", "link", "add", lan, "type", "veth", "peer", "name", f"{lan}2"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.177.3.1/24", "dev", lan], check=True)
        subprocess.run(["ip", "link", "set", lan, "up"], check=True)
        env = {**hive_env.env, "STEM_POOL": "10.177.0.0/16"}
        assert_refused(run_stem(env, "ls"), f"overlaps the host's network 10.177.3.0/24 on {lan}")
    finally:
        subprocess.run(["ip", "link", "del", lan], check=False)


def test_claims_do_not_outlive_a_cleanup(hive_env):
    assert run_stem(hive_env.env, "ls").returncode == 0
    assert (claims.CLAIMS_DIR / hive_env.prefix).exists()
    hive_env.cleanup()
    assert not (claims.CLAIMS_DIR / hive_env.prefix).exists()


def test_hives_that_name_no_prefix_or_pool_get_free_ones_and_keep_them(hive_env, tmp_path):
    """STEM_HOME set in two shells and nothing else: each hive gets a prefix and a pool no other hive has (the
    defaults for the first, when free), keeps them from one command to the next, and each colony gets an address
    in its hive's pool."""
    repo = make_repo(tmp_path / "repo")
    assert run_stem(hive_env.env, "spawn", "mine", "--repo", str(repo)).returncode == 0
    hives = [HiveEnv(tmp_path / "first"), HiveEnv(tmp_path / "second")]
    try:
        chosen = []
        for hive, name in zip(hives, ("one", "two"), strict=True):
            del hive.env["STEM_PREFIX"], hive.env["STEM_POOL"]
            result = run_stem(hive.env, "spawn", name, "--repo", str(repo))
            remembered = json.loads((hive.home / claims.REMEMBERED).read_text())
            hive.prefix, hive.pool = remembered["prefix"], ipaddress.IPv4Network(remembered["pool"])
            assert result.returncode == 0, result.stderr
            assert netns_names(hive.prefix) == [f"{hive.prefix}-{name}"]
            (row,) = json.loads(run_stem(hive.env, "ls", "--json").stdout)
            assert ipaddress.IPv4Address(row["ip"]) in hive.pool
            chosen.append((hive.prefix, hive.pool))
        everyone = [*chosen, (hive_env.prefix, hive_env.pool)]
        for i, (prefix, pool) in enumerate(everyone):
            for other_prefix, other_pool in everyone[i + 1 :]:
                assert not claims.clash(prefix, other_prefix)
                assert not pool.overlaps(other_pool)
        for hive in hives:  # the next command keeps what the hive chose, and gc touches no other hive's
            assert run_stem(hive.env, "gc").returncode == 0
        assert [netns_names(hive.prefix) for hive in hives] == [[f"{hives[0].prefix}-one"], [f"{hives[1].prefix}-two"]]
        assert [json.loads(run_stem(h.env, "ls", "--json").stdout)[0]["state"] for h in hives] == ["running"] * 2
    finally:
        for hive in hives:
            hive.cleanup()


def test_a_prefix_that_is_another_plus_digits_is_refused(hive_env, tmp_path):
    """Interface names would meet: `t123` + slot 45 and `t1234` + slot 5 are both `t12345`."""
    assert claims.clash("stem", "stem2") and claims.clash("stem2", "stem") and claims.clash("stem", "stem")
    assert not claims.clash("stem", "stemb") and not claims.clash("stem", "ste")
    shorter = HiveEnv(tmp_path / "shorter")
    try:
        shorter.prefix = hive_env.prefix[:4]
        hive_env.prefix = hive_env.prefix[:4] + "7"
        hive_env.env["STEM_PREFIX"], shorter.env["STEM_PREFIX"] = hive_env.prefix, shorter.prefix
        assert run_stem(hive_env.env, "ls").returncode == 0
        assert_refused(run_stem(shorter.env, "ls"), f"prefix {shorter.prefix!r} would name interfaces as the hive at")
    finally:
        shorter.cleanup()


def test_a_hand_edited_claim_file_is_chosen_again(tmp_path):
    hive = HiveEnv(tmp_path / "edited")
    try:
        del hive.env["STEM_PREFIX"], hive.env["STEM_POOL"]
        hive.home.mkdir(parents=True, exist_ok=True)
        (hive.home / claims.REMEMBERED).write_text('{"prefix": "Not Valid!", "pool": "nonsense"}')
        result = run_stem(hive.env, "ls")
        remembered = json.loads((hive.home / claims.REMEMBERED).read_text())
        hive.prefix = remembered["prefix"]
        assert result.returncode == 0, result.stderr
        assert PREFIX_RE.match(hive.prefix) and ipaddress.IPv4Network(remembered["pool"]).is_private
    finally:
        hive.cleanup()
