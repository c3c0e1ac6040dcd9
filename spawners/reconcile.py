"""On hub start, make Slurm and the hub agree: a workbench job (named aifa-wb-<user>) that no
server of the hub owns is logged and cancelled, so none is left running unaccounted.

Runs inside the hub process once it has started and loaded its spawners (their job ids are
in memory: a spawn in flight already has one), then every `interval` seconds.
"""
from __future__ import annotations

import asyncio
import re

from .transport import LocalTransport

JOB_NAME = re.compile(r"aifa-wb-([a-z][a-z0-9_-]{0,31})")


def unknown_jobs(squeue_output: str, known_job_ids: set[str]) -> list[tuple[str, str]]:
    """`squeue -h --format=%i|%j|%u` lines -> [(job id, user)] of workbench jobs nobody owns.
    A job counts as a workbench job only if its name names its own user."""
    orphans = []
    for line in squeue_output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        job_id, name, user = parts
        match = JOB_NAME.fullmatch(name)
        if match and match.group(1) == user and job_id not in known_job_ids:
            orphans.append((job_id, user))
    return orphans


def known_job_ids(app) -> tuple[set[str], bool]:
    """Job ids the hub's spawners hold, and whether any spawner is busy (starting or stopping)."""
    ids, busy = set(), False
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            job_id = getattr(spawner, "job_id", "")
            if job_id:
                ids.add(job_id)
            busy = busy or bool(spawner.pending)
    return ids, busy


async def reconcile_once(app, transport: LocalTransport, slurm_bin: str) -> list[tuple[str, str]]:
    log = app.log
    known, busy = known_job_ids(app)
    if busy:
        return []   # a job id may be moments from being recorded: look again next time
    result = await transport.run([f"{slurm_bin}/squeue", "--noheader", "--format=%i|%j|%u",
                                  "--states=PENDING,CONFIGURING,RUNNING,SUSPENDED"], timeout=30)
    if not result.ok:
        log.warning("Reconciling skipped, Slurm did not answer: %s", result.stderr.strip())
        return []
    orphans = unknown_jobs(result.stdout, known)
    for job_id, user in orphans:
        log.warning("Job %s of %s is a workbench job no server of this hub owns: cancelling it", job_id, user)
        cancel = await transport.run([f"{slurm_bin}/scancel", job_id], as_user=user, timeout=30)
        if not cancel.ok:
            log.error("Could not cancel job %s of %s: %s", job_id, user, cancel.stderr.strip())
    return orphans


async def _run(slurm_bin: str, interval: float) -> None:
    from jupyterhub.app import JupyterHub

    app = JupyterHub.instance()
    await app._start_future
    transport = LocalTransport()
    log = app.log
    while True:
        try:
            orphans = await reconcile_once(app, transport, slurm_bin)
            log.info("Reconciled Slurm with the hub: %d unknown workbench job(s) cancelled", len(orphans))
        except Exception:
            log.exception("Reconciling Slurm with the hub failed")
        await asyncio.sleep(interval)


def start_reconciler(slurm_bin: str = "/usr/bin", interval: float = 600) -> None:
    """Schedule reconciliation in the hub's event loop (call from jupyterhub_config.py)."""
    asyncio.get_event_loop().call_soon(lambda: asyncio.ensure_future(_run(slurm_bin, interval)))
