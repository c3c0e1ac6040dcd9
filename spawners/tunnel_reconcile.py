"""Tunnels no server owns, made right beside the jobs' reconciler (spawners.reconcile):

- forward reach: a forward the tunnel daemon holds for a job no server of this hub runs (a
  close the daemon did not take while it was down, a hub that crashed between opening a
  forward and recording its job) is closed;
- reverse reach: a gateway grant older than any job's certificate can be (the longest walltime
  plus the start timeout) is deleted, its port free again. Grants are not matched against this
  hub's servers: hubs may share a gateway, and a grant no one uses any more is inert (its
  certificate has expired), it only holds a port.
"""
from __future__ import annotations

import time
from pathlib import Path

from aifa_workbench.sites.tunnel_client import TunnelDaemonError, ask


def owned_forward_ids(app) -> tuple[set[str], bool]:
    """The forward ids of this hub's servers with a job, and whether any spawner is busy."""
    owned, busy = set(), False
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            busy = busy or bool(spawner.pending)
            spawner = getattr(spawner, "child_spawner", None) or spawner      # wrapspawner's child
            if getattr(spawner, "job_id", "") and getattr(spawner, "job_site", ""):
                owned.add(spawner.forward_id)
    return owned, busy


def stale_forward_ids(listing: list[dict], owned: set[str]) -> list[str]:
    return sorted(f["id"] for f in listing if isinstance(f, dict) and isinstance(f.get("id"), str)
                  and f["id"] not in owned)


def expired_grants(grants_dir: str, lifetime_seconds: float, now: float | None = None) -> list[Path]:
    """Grant files older than `lifetime_seconds` (no certificate for them is valid any more)."""
    now = time.time() if now is None else now
    expired = []
    for path in Path(grants_dir).iterdir():
        try:
            if path.name.isdigit() and now - path.lstat().st_mtime > lifetime_seconds:
                expired.append(path)
        except OSError:
            continue
    return sorted(expired)


async def reconcile_tunnels(app, socket_path: str, grants_dir: str, grant_lifetime: float) -> tuple[list, list]:
    """(forwards closed, grants deleted)."""
    closed: list[str] = []
    if socket_path and Path(socket_path).exists():
        try:
            listing = (await ask(socket_path, {"op": "list"}))["forwards"]
            owned, busy = owned_forward_ids(app)
            if not busy:                  # a forward may be moments from its job id: next time
                for forward_id in stale_forward_ids(listing, owned):
                    if forward_id not in owned_forward_ids(app)[0]:
                        await ask(socket_path, {"op": "close", "id": forward_id})
                        app.log.warning("Forward %s belongs to no server of this hub: closed", forward_id)
                        closed.append(forward_id)
        except TunnelDaemonError as e:
            app.log.warning("Reconciling the tunnel daemon's forwards skipped: %s", e.detail)
    deleted = []
    if grants_dir and Path(grants_dir).is_dir():
        for path in expired_grants(grants_dir, grant_lifetime):
            try:
                path.unlink()
                deleted.append(path.name)
            except OSError as e:
                app.log.warning("Expired gateway grant %s not deleted: %s", path.name, e)
        if deleted:
            app.log.warning("Deleted %d gateway grant(s) older than any job's certificate: ports %s",
                            len(deleted), ", ".join(deleted))
    return closed, deleted
