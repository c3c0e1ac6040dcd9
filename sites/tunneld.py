"""Forward reach (JUPITER): the tunnel daemon, a process apart from the hub, holds the forwards to
notebook servers on compute nodes nobody can dial into, through each user's own connection to
the site's login node, and the remote forward by which that user's jobs call the hub's API.

It keeps the wanted forwards in a small database and makes them again when it starts, and
whenever a user's connection drops (keepalives notice a dead link within seconds; logins are
tried again at once, with a pause of at most a second), each on the same local port, so the
proxy's routes stay right; unless someone else bound that port meanwhile (any user of this host
may): then on a fresh port, and the hub moves the server's route there (spawners.tunnel_reconcile). The hub asks it over a unix socket in the hub's state directory (only
the hub's user can open it): one JSON request per line, one JSON answer per line (protocol below).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .ssh_library import asyncssh

from . import socket_owner
from .ssh import SshRunner

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.5  # how often dropped connections are looked for
# The local ports of the forwards: a range of their own, reserved from the kernel's ephemeral
# ports (role tunnel_gateway), so that no other process of this host takes one while the daemon
# is down, and no forward takes a port the tunnel gateway grants.
LOCAL_PORTS = (43000, 43999)
WARN_EVERY_SECONDS = 60
MAX_REQUEST_BYTES = 4096
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}/[A-Za-z0-9_.-]{0,96}")  # <hub user>/<server name>.<job id>
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")


class TunnelError(RuntimeError):
    """A forward could not be made; the message is for the hub's log."""


@dataclass(frozen=True)
class Forward:
    id: str  # <hub user>/<server name>.<job id>
    site: str
    user: str  # the hub user, whose connection carries it
    host: str  # the compute node, as the login node resolves it
    port: int
    local_port: int = 0


class ForwardStore:
    """The wanted forwards and hub-API forwards, in SQLite (the daemon's own file)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS forwards (id TEXT PRIMARY KEY, site TEXT, user TEXT, "
            "host TEXT, port INTEGER, local_port INTEGER)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS hub_api (site TEXT, user TEXT, port INTEGER, PRIMARY KEY (site, user))"
        )

    def forwards(self) -> list[Forward]:
        return [Forward(*row) for row in self.db.execute("SELECT id, site, user, host, port, local_port FROM forwards")]

    def put(self, forward: Forward) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO forwards VALUES (?, ?, ?, ?, ?, ?)",
            (forward.id, forward.site, forward.user, forward.host, forward.port, forward.local_port),
        )

    def delete(self, forward_id: str) -> None:
        self.db.execute("DELETE FROM forwards WHERE id = ?", (forward_id,))

    def hub_api_ports(self) -> dict[tuple[str, str], int]:
        return {(site, user): port for site, user, port in self.db.execute("SELECT site, user, port FROM hub_api")}

    def put_hub_api(self, site: str, user: str, port: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO hub_api VALUES (?, ?, ?)", (site, user, port))

    def delete_hub_api(self, site: str, user: str) -> None:
        self.db.execute("DELETE FROM hub_api WHERE site = ? AND user = ?", (site, user))


class TunnelDaemon:
    def __init__(
        self,
        runners: dict[str, SshRunner],
        store: ForwardStore,
        hub_api_relay: str,
        hub_forward_hosts: dict[str, str],
        hub_api_ca: str = "",
    ):
        self.runners, self.store = runners, store
        self.hub_api_relay = hub_api_relay  # the hub API's TLS relay: a unix socket's path
        self.hub_forward_hosts = hub_forward_hosts  # {site: login node name the site's nodes dial}
        self.hub_api_ca = hub_api_ca  # the CA jobs trust for the hub (sites.hub_api_tls)
        self.listeners: dict[str, asyncssh.SSHListener] = {}
        self.api_listeners: dict[tuple[str, str], asyncssh.SSHListener] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._hub_api_asked: dict[tuple[str, str], int] = {}  # how often each was asked for (this run)
        self._warned: dict = {}

    def _lock_of(self, user: str) -> asyncio.Lock:
        """One lock per hub user: a login that hangs on one user's site holds up no one else."""
        return self._locks.setdefault(user, asyncio.Lock())

    async def _connection(self, site: str, user: str) -> asyncssh.SSHClientConnection:
        runner = self.runners.get(site)
        if runner is None:
            raise TunnelError(f"no forward-reach site {site!r}")
        try:
            return await runner.connection_for(user).connection()
        except Exception as e:  # SiteError and friends: the hub's sentence comes from its kind
            raise TunnelError(f"{site}: {type(e).__name__}: {e}") from None

    async def open(self, forward: Forward) -> int:
        async with self._lock_of(forward.user):
            old = self.listeners.pop(forward.id, None)
            if old is not None:
                old.close()
            listener = await self._listen(forward)
            self.listeners[forward.id] = listener
            kept = Forward(forward.id, forward.site, forward.user, forward.host, forward.port, listener.get_port())
            self.store.put(kept)
            return kept.local_port

    async def _listen(self, forward: Forward) -> asyncssh.SSHListener:
        """On the forward's own local port, or a free one of LOCAL_PORTS for a new forward."""
        conn = await self._connection(forward.site, forward.user)
        taken = {f.local_port for f in self.store.forwards()}
        candidates = (
            [forward.local_port] if forward.local_port else _some_free(range(LOCAL_PORTS[0], LOCAL_PORTS[1] + 1), taken)
        )
        error: Exception | None = None
        for port in candidates:
            try:
                return await conn.forward_local_port("127.0.0.1", port, forward.host, forward.port)
            except Exception as e:  # OSError, asyncssh.Error, ChannelListenError (none of those)
                error = e
        raise TunnelError(f"forward to {forward.host}:{forward.port}: {error}")

    async def _listen_again(self, forward: Forward) -> tuple[asyncssh.SSHListener, Forward]:
        """A dropped forward made again on its own port, or, when another account's socket holds
        that port now, on a fresh one (kept in the store: the hub re-routes the server there)."""
        await self._connection(forward.site, forward.user)  # the site's side first: its failure is no move
        try:
            return await self._listen(forward), forward
        except TunnelError:
            holders = socket_owner.owners("127.0.0.1", forward.local_port)
            if holders == {os.geteuid()}:
                raise  # our own old socket is not gone yet
            # another account's listener, or a socket bound without listening (not in /proc)
        listener = await self._listen(dataclasses.replace(forward, local_port=0))
        moved = dataclasses.replace(forward, local_port=listener.get_port())
        self.store.put(moved)
        log.warning(
            "Forward %s: its port %s is held by uid %s, not this daemon: moved to port %s",
            forward.id,
            forward.local_port,
            ",".join(map(str, sorted(holders))),
            moved.local_port,
        )
        return listener, moved

    async def close(self, forward_id: str) -> bool:
        async with self._lock_of(forward_id.split("/", 1)[0]):  # ids start with their user
            listener = self.listeners.pop(forward_id, None)
            if listener is not None:
                listener.close()
            known = any(f.id == forward_id for f in self.store.forwards())
            self.store.delete(forward_id)
            return known or listener is not None

    async def hub_api(self, site: str, user: str) -> tuple[str, int]:
        """Where `user`'s jobs on `site` call the hub: a port on the login node, forwarded to the
        TLS relay here (jobs trust `hub_api_ca` for it)."""
        async with self._lock_of(user):
            self._hub_api_asked[(site, user)] = self._hub_api_asked.get((site, user), 0) + 1
            listener = self.api_listeners.get((site, user))
            if listener is None or _closed(listener):
                port = self.store.hub_api_ports().get((site, user), 0)
                try:
                    listener = await self._listen_hub_api(site, user, port)
                except TunnelError:
                    # the login node still holds the old port (a dropped connection's session it
                    # has not given up on yet): a new one, unless running jobs call the hub there
                    if not port or any(f.site == site and f.user == user for f in self.store.forwards()):
                        raise
                    listener = await self._listen_hub_api(site, user, 0)
            return self.hub_forward_hosts[site], listener.get_port()

    async def release_hub_api(self, site: str, user: str, asked: int | None) -> bool:
        """The login node's port given back, once no job of `user` on `site` may call the hub
        (the hub's reconciler asks: it knows the servers); not while a forward of theirs is there,
        nor if a spawn asked for it since the reconciler's listing (`asked` is the count it saw)."""
        async with self._lock_of(user):
            if asked != self._hub_api_asked.get((site, user), 0):
                return False
            if any(f.site == site and f.user == user for f in self.store.forwards()):
                return False
            listener = self.api_listeners.pop((site, user), None)
            if listener is not None:
                listener.close()
            self.store.delete_hub_api(site, user)
            return True

    async def _listen_hub_api(self, site: str, user: str, port: int) -> asyncssh.SSHListener:
        host = self.hub_forward_hosts.get(site)
        if host is None:
            raise TunnelError(f"{site} has no hub_forward_host")
        conn = await self._connection(site, user)
        try:
            listener = await conn.forward_remote_port_to_path(host, port, self.hub_api_relay)
        except Exception as e:  # asyncssh's ChannelListenError is not an asyncssh.Error
            raise TunnelError(f"remote forward {host}:{port} on {site}: {e}") from None
        self.api_listeners[(site, user)] = listener
        self.store.put_hub_api(site, user, listener.get_port())
        return listener

    async def restore(self) -> None:
        """Make every wanted forward again, each on its own local port (after a start, or when
        its connection dropped). Failures are logged and tried again at the next watch."""
        for forward in self.store.forwards():
            listener = self.listeners.get(forward.id)
            if listener is not None and not _closed(listener):
                continue
            try:
                async with self._lock_of(forward.user):
                    if forward not in self.store.forwards():
                        continue  # closed while this waited for the lock
                    self.listeners[forward.id], forward = await self._listen_again(forward)
                log.info(
                    "Forward %s: 127.0.0.1:%s -> %s:%s (%s)",
                    forward.id,
                    forward.local_port,
                    forward.host,
                    forward.port,
                    forward.site,
                )
            except TunnelError as e:
                self._warn(forward.id, f"Forward {forward.id} not made again yet: {e}")
        for site, user in list(self.store.hub_api_ports()):
            listener = self.api_listeners.get((site, user))
            if listener is not None and not _closed(listener):
                continue
            try:
                async with self._lock_of(user):
                    # hub_api() may have made it meanwhile, release_hub_api() given it back
                    listener, port = self.api_listeners.get((site, user)), self.store.hub_api_ports().get((site, user))
                    if port is not None and (listener is None or _closed(listener)):
                        await self._listen_hub_api(site, user, port)
            except TunnelError as e:
                self._warn((site, user), f"Hub API forward of {user} on {site} not made again yet: {e}")

    def _warn(self, key, message: str) -> None:
        """At most one warning a minute for each forward that cannot be made (tried every 0.5 s)."""
        now = time.monotonic()
        if now - self._warned.get(key, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned[key] = now
            log.warning("%s", message)

    async def watch(self) -> None:
        while True:
            try:
                await self.restore()
            except Exception:  # one bad round must not end the daemon (and every forward)
                log.exception("Making the forwards again failed; trying again")
            await asyncio.sleep(WATCH_SECONDS)

    def listing(self) -> list[dict]:
        return [
            {
                "id": f.id,
                "site": f.site,
                "user": f.user,
                "host": f.host,
                "port": f.port,
                "local_port": f.local_port,
                "up": f.id in self.listeners and not _closed(self.listeners[f.id]),
            }
            for f in self.store.forwards()
        ]

    # --- the unix socket's protocol -----------------------------------------------------------------
    async def answer(self, request: dict) -> dict:
        """{"op": "open", "id", "site", "user", "host", "port"} -> {"ok", "local_port"};
        {"op": "close", "id"}; {"op": "hub_api", "site", "user"} -> {"ok", "host", "port", "ca"} (https);
        {"op": "release_hub_api", "site", "user", "asked"} -> {"ok", "released"};
        {"op": "list"} -> {"ok", "forwards", "hub_api"}; {"op": "health"} -> {"ok"}."""
        op = request.get("op")
        try:
            if op == "open":
                local_port = await self.open(checked_forward(request))
                return {"ok": True, "local_port": local_port}
            if op == "close":  # closing what is not (or no longer) there is fine
                return {"ok": True, "closed": await self.close(str(request.get("id", "")))}
            if op == "hub_api":
                host, port = await self.hub_api(str(request.get("site", "")), str(request.get("user", "")))
                return {"ok": True, "host": host, "port": port, "ca": self.hub_api_ca}
            if op == "release_hub_api":
                asked = request.get("asked")
                return {
                    "ok": True,
                    "released": await self.release_hub_api(
                        str(request.get("site", "")),
                        str(request.get("user", "")),
                        asked if isinstance(asked, int) else None,
                    ),
                }
            if op == "list":
                return {
                    "ok": True,
                    "forwards": self.listing(),
                    "hub_api": [
                        {"site": site, "user": user, "port": port, "asked": self._hub_api_asked.get((site, user), 0)}
                        for (site, user), port in sorted(self.store.hub_api_ports().items())
                    ],
                }
            if op == "health":
                return {"ok": True}
        except (TunnelError, ValueError, KeyError) as e:
            return {"ok": False, "error": str(e)[:500]}
        return {"ok": False, "error": f"unknown op {str(op)[:40]!r}"}

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if len(line) > MAX_REQUEST_BYTES:
                    break
                try:
                    request = json.loads(line)
                    answer = await self.answer(request) if isinstance(request, dict) else {"ok": False}
                except json.JSONDecodeError:
                    answer = {"ok": False, "error": "not JSON"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


def checked_forward(request: dict) -> Forward:
    """A forward request as the hub sends it; anything else is refused (ValueError)."""
    forward_id, site, user = request.get("id"), request.get("site"), request.get("user")
    host, port = request.get("host"), request.get("port")
    if not (isinstance(forward_id, str) and _ID.fullmatch(forward_id) and forward_id.split("/")[0] == user):
        raise ValueError("bad forward id")
    if not (isinstance(host, str) and _HOST.fullmatch(host)):
        raise ValueError("bad node name")
    if not (isinstance(port, int) and 1 <= port <= 65535) or not isinstance(site, str) or not isinstance(user, str):
        raise ValueError("bad port, site or user")
    return Forward(forward_id, site, user, host, port)


def _some_free(ports: range, taken: set[int], how_many: int = 20) -> list[int]:
    free = [p for p in ports if p not in taken]
    return random.sample(free, min(how_many, len(free)))


def _closed(listener: asyncssh.SSHListener) -> bool:
    conn = getattr(listener, "_conn", None)
    return conn is None or conn.is_closed()
