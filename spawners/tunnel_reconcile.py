"""Tunnels no server owns, made right beside the jobs' reconciler (spawners.reconcile):

- forward reach: a forward the tunnel daemon holds for a job no server of this hub runs (a
  close the daemon did not take while it was down, a hub that crashed between opening a
  forward and recording its job) is closed;
- forward reach: a user's hub API forward on a site's login node, once none of their jobs there
  may call the hub and nothing of theirs is starting, is given back (the port is the site's);
- reverse reach: a gateway grant whose certificate has expired (its file's modification time,
  gateway.mark_expiry) is deleted, its port free again, whichever hub sharing the gateway made
  it: no certificate can use it any more.

And, every few seconds: the route of a forward-reach server whose forward the tunnel daemon had
to move (someone else bound its old port while it was down) goes to the new port, once the
kernel says the daemon's account holds it; a reverse-reach server whose gateway port someone
else bound while its tunnel was down, or a local cluster's server whose port someone else bound
once its JupyterLab was gone, is stopped, and its card says why.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from aifa_workbench.sites import socket_owner
from aifa_workbench.sites.tunnel_client import TunnelDaemonError, ask

ROUTE_CHECK_SECONDS = 2


def owned_forward_ids(app) -> tuple[set[tuple[str, str]], set[str], set[tuple[str, str]]]:
    """(site, forward id) of this hub's servers with a job (a forward id names its job by id, and
    a job id is one site's: job 12 on one site is not job 12 on another); the users with a spawner
    busy (starting or stopping: a forward of theirs may be moments from its job id); and (site,
    user) of every job (whose calls to the hub need that user's hub API forward on that site)."""
    owned, busy, calling = set(), set(), set()
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            if spawner.pending:
                busy.add(user.name)
            if getattr(spawner, "job_id", "") and getattr(spawner, "job_site", ""):
                owned.add((spawner.job_site, spawner.forward_id))
                calling.add((spawner.job_site, user.name))
    return owned, busy, calling


def unused_hub_api(entries: list[dict], calling: set[tuple[str, str]], busy_users: set[str]) -> list[tuple[str, str]]:
    """Hub API forwards no job of this hub calls through, of users with nothing starting."""
    pairs = {(e.get("site"), e.get("user")) for e in entries if isinstance(e, dict)}
    return sorted(
        p for p in pairs if all(isinstance(x, str) for x in p) and p not in calling and p[1] not in busy_users
    )


def stale_forward_ids(
    listing: list[dict], owned: set[tuple[str, str]], busy_users: set[str] = frozenset()
) -> list[str]:
    """Ids of the listed forwards whose (site, id) is not `owned`, of users with nothing busy."""
    return sorted(
        f["id"]
        for f in listing
        if isinstance(f, dict)
        and isinstance(f.get("id"), str)
        and (f.get("site"), f["id"]) not in owned
        and f["id"].split("/", 1)[0] not in busy_users
    )


# Grants made before their files kept the certificate's expiry (gateway.mark_expiry): their
# modification time is when they were made; none outlives the longest walltime a catalogue
# allows (168 h) plus a start timeout.
UNMARKED_LIFETIME_SECONDS = 8 * 24 * 3600


def expired_grants(grants_dir: str, grace_seconds: float, now: float | None = None) -> list[Path]:
    """Grant files whose certificate expired more than `grace_seconds` ago."""
    now = time.time() if now is None else now
    expired = []
    for path in Path(grants_dir).iterdir():
        try:
            info = path.lstat()
            marked = info.st_mtime > info.st_ctime + 60  # set into the future by mark_expiry
            expires = info.st_mtime if marked else info.st_mtime + UNMARKED_LIFETIME_SECONDS
            if path.name.isdigit() and expires + grace_seconds < now:
                expired.append(path)
        except OSError:
            continue
    return sorted(expired)


async def reconcile_tunnels(app, socket_path: str, grants_dir: str, grace_seconds: float = 600) -> tuple[list, list]:
    """(forwards closed, grants deleted)."""
    closed: list[str] = []
    if socket_path and Path(socket_path).exists():
        try:
            answer = await ask(socket_path, {"op": "list"})
            owned, busy, calling = owned_forward_ids(app)
            for forward_id in stale_forward_ids(answer["forwards"], owned, busy):
                owned_now, busy_now, _ = owned_forward_ids(app)
                if forward_id in stale_forward_ids(answer["forwards"], owned_now, busy_now):
                    await ask(socket_path, {"op": "close", "id": forward_id})
                    app.log.warning("Forward %s belongs to no server of this hub: closed", forward_id)
                    closed.append(forward_id)
            asked = {
                (e.get("site"), e.get("user")): e.get("asked") for e in answer.get("hub_api", []) if isinstance(e, dict)
            }
            for site, user in unused_hub_api(answer.get("hub_api", []), calling, busy):
                _, busy_now, calling_now = owned_forward_ids(app)
                if user not in busy_now and (site, user) not in calling_now:
                    # refused by the daemon if a spawn asked for it since the listing
                    await ask(
                        socket_path, {"op": "release_hub_api", "site": site, "user": user, "asked": asked[(site, user)]}
                    )
        except TunnelDaemonError as e:
            app.log.warning("Reconciling the tunnel daemon's forwards skipped: %s", e.detail)
    deleted = []
    if grants_dir and Path(grants_dir).is_dir():
        for path in expired_grants(grants_dir, grace_seconds):
            try:
                path.unlink()
                deleted.append(path.name)
            except OSError as e:
                app.log.warning("Expired gateway grant %s not deleted: %s", path.name, e)
        if deleted:
            app.log.warning(
                "Deleted %d gateway grant(s) whose certificate has expired: ports %s", len(deleted), ", ".join(deleted)
            )
    return closed, deleted


def moved_forwards(listing: list[dict], routed_ports: dict[str, int]) -> dict[str, int]:
    """{forward id: its new local port} for forwards that are up on another port than the one
    their server is routed to (`routed_ports`: forward id -> routed port)."""
    moved = {}
    for entry in listing:
        if not isinstance(entry, dict) or entry.get("up") is not True:
            continue
        forward_id, port = entry.get("id"), entry.get("local_port")
        if isinstance(port, int) and forward_id in routed_ports and routed_ports[forward_id] != port:
            moved[forward_id] = port
    return moved


def routed_forward_servers(app) -> dict[str, tuple]:
    """{forward id: (user, spawner)} of this hub's running forward-reach servers."""
    found = {}
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            if (
                spawner.ready
                and not spawner.pending
                and getattr(spawner, "job_id", "")
                and getattr(spawner, "job_site", "")
                and getattr(spawner, "forward", False)
            ):
                found[spawner.forward_id] = (user, spawner)
    return found


async def reroute_moved_forwards(app, socket_path: str) -> list[str]:
    """Route each moved forward's server to its new port (the kernel must say this hub's
    account holds it: the tunnel daemon's); the forward ids re-routed."""
    answer = await ask(socket_path, {"op": "list"})
    servers = routed_forward_servers(app)
    routed = {forward_id: spawner.server.port for forward_id, (_, spawner) in servers.items()}
    rerouted = []
    for forward_id, port in moved_forwards(answer.get("forwards", []), routed).items():
        user, spawner = servers[forward_id]
        if await asyncio.to_thread(socket_owner.owners, "127.0.0.1", port) != {os.geteuid()}:
            continue
        spawner.server.port = spawner.port = port
        app.db.commit()
        await app.proxy.add_user(user, spawner.name)
        app.log.warning(
            "Server %s moved to 127.0.0.1:%s: its forward's old port was taken by someone else", forward_id, port
        )
        rerouted.append(forward_id)
    return rerouted


def watched_on_this_host(spawner) -> bool:
    """A running server routed to a socket of this host that only one account may hold: a
    reverse-reach server (the gateway's port) or the local cluster's (the job user's). A
    forward-reach server's port, when taken, is moved by the tunnel daemon instead."""
    if not spawner.ready or spawner.pending or not getattr(spawner, "job_id", "") or not hasattr(spawner, "reverse"):
        return False
    return bool(spawner.reverse) or not spawner.remote


def taken_servers(app, snapshot: list) -> list[tuple]:
    """(user, spawner) of those servers whose address another account holds now (its tunnel or
    JupyterLab went away, and someone bound the port meanwhile); `snapshot`:
    socket_owner.all_listeners()."""
    taken = []
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            if not watched_on_this_host(spawner):
                continue
            ip, port = spawner.server.ip, spawner.server.port
            owners = socket_owner.owners(ip, port, snapshot) if socket_owner.is_local_address(ip) else set()
            if owners and owners != {spawner._listener_uid()}:
                taken.append((user, spawner))
    return taken


async def stop_taken_servers(app) -> list[str]:
    """Stop each server whose address another account took (on the gateway's ports the tunnels'
    firewall already keeps every byte from the taker); its ended card says why."""
    stopped = []
    if not any(watched_on_this_host(s) for u in list(app.users.values()) for s in list(u.spawners.values())):
        return stopped
    snapshot = await asyncio.to_thread(socket_owner.all_listeners)  # one read of /proc for every server
    for user, spawner in taken_servers(app, snapshot):
        app.log.error(
            "The address %s:%s of %s's server is held by another account: stopping it",
            spawner.server.ip,
            spawner.server.port,
            user.name,
        )
        spawner.stop_reason = "tunnel_taken"
        await app.proxy.delete_user(user, spawner.name)
        await user.stop(spawner.name)
        stopped.append(f"{user.name}/{spawner.name}")
    return stopped


async def keep_routes(app, socket_path: str, every: float = ROUTE_CHECK_SECONDS) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await stop_taken_servers(app)
            if socket_path and Path(socket_path).exists():
                await reroute_moved_forwards(app, socket_path)
        except TunnelDaemonError as e:
            app.log.debug("Routes of moved forwards not checked: %s", e.detail)
        except Exception:
            app.log.exception("Keeping the tunnels' routes failed")
