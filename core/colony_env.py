"""The environment every process of a colony sees: a safe part of the caller's (core.sandbox.SAFE_ENV, and
`[colony] pass_env`) when the colony is isolated, else all of it (less git's repository variables); its proxies
pointed at the colony's host address; its HOME; and the COLONY_* facts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from core import worktree
from core.egress import proxy_env
from core.registry import ColonyRecord
from core.sandbox import Sandbox, env_for_colony


def colony_env(
    rec: ColonyRecord,
    extra: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    sandbox: Sandbox | None = None,
    pass_env: Iterable[str] = (),
) -> dict[str, str]:
    """git inside finds the colony's worktree; a proxy on the host's loopback is reached at the host address.
    `extra` (colony.toml's `[colony] env`, a `stem exec -e`) comes last, over the colony's own facts, as it does
    for its services and agent: a `DATABASE_URL` it sets is the one its build, services, agent and exec all see."""
    if sandbox is None:
        env = worktree.without_repo_vars(environ)
    else:
        env = env_for_colony(environ, sandbox.identity, sandbox.home, pass_env)
    env.update(proxy_env(environ, rec.host_ip))
    env.update(
        COLONY_NAME=rec.name,
        COLONY_IP=rec.ip,
        COLONY_HOST_IP=rec.host_ip,
        COLONY_WORKTREE=rec.worktree,
        COLONY_DB=rec.db_path,
        DATABASE_URL=f"sqlite:///{rec.db_path}",
    )
    env.update(extra or {})
    return env
