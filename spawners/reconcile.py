"""On hub start, make Slurm and the hub agree: a workbench job (named aifa-wb-<user>) that no
server of the hub owns is logged and cancelled, so none is left running unaccounted.

Runs inside the hub process once it has started and loaded its spawners (their job ids are
in memory: a spawn in flight already has one), then every `interval` seconds.
"""
from __future__ import annotations

import asyncio
import re

from .transport import LocalTransport, bounded

_USER = r"[a-z][a-z0-9_-]{0,31}"
# A line of `squeue --format=%i|%u|%j --name=aifa-wb-...`. The job name is the only field a user
# chooses, and a name may hold newlines or `|`; but squeue's --name filter keeps only jobs whose
# name is exactly one of the names asked for, so every name printed is a plain aifa-wb-<user>.
_LINE = re.compile(rf"([0-9]+)\|({_USER})\|aifa-wb-({_USER})")
JOB_NAME_PREFIX = "aifa-wb-"


NAMES_PER_QUERY = 500   # one --name argument stays far below the kernel's 128 KiB per argument


def job_names(usernames) -> list[str]:
    """The --name filters, in batches: the workbench job name of each hub user."""
    names = [JOB_NAME_PREFIX + name for name in sorted(usernames) if re.fullmatch(_USER, name)]
    return [",".join(names[i:i + NAMES_PER_QUERY]) for i in range(0, len(names), NAMES_PER_QUERY)]


def unknown_jobs(squeue_output: str, known_job_ids: set[str]) -> list[tuple[str, str]]:
    """`squeue -h --name=... --format=%i|%u|%j` lines -> [(job id, owner)] of workbench jobs nobody owns.

    A job counts only if its name names its own owner, as Slurm reported it for that id. Other
    lines (array or heterogeneous job ids such as 17_1 or 17+0, names of other shapes) are not
    workbench jobs and are skipped, and so is an id seen twice."""
    seen: dict[str, int] = {}
    candidates = []
    for line in squeue_output.splitlines():
        match = _LINE.fullmatch(line.strip())
        if not match:
            continue
        job_id, owner, named = match.groups()
        seen[job_id] = seen.get(job_id, 0) + 1
        if named == owner and job_id not in known_job_ids:
            candidates.append((job_id, owner))
    return [(job_id, owner) for job_id, owner in candidates if seen[job_id] == 1]


def confirm_argv(slurm_bin: str, job_id: str, owner: str) -> list[str]:
    """squeue prints exactly the job id if job `job_id` is owner's and named aifa-wb-<owner>:
    Slurm's own filters, with no field of the job printed but its id."""
    return [f"{slurm_bin}/squeue", "--noheader", f"--jobs={job_id}", f"--name={JOB_NAME_PREFIX}{owner}",
            f"--user={owner}", "--format=%i"]


def hub_usernames(app) -> set[str]:
    """Every user the hub knows (its database), whose jobs the reconciler looks for."""
    from jupyterhub import orm

    return {user.name for user in app.db.query(orm.User)}


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
    listing = []
    for names in job_names(hub_usernames(app)):
        result = await transport.run([f"{slurm_bin}/squeue", "--noheader", "--format=%i|%u|%j", f"--name={names}",
                                      "--states=PENDING,CONFIGURING,RUNNING,SUSPENDED"], timeout=30)
        if not result.ok:
            log.warning("Reconciling skipped, Slurm did not answer: %s", bounded(result.stderr))
            return []
        listing.append(result.stdout)
    orphans = []
    for job_id, user in unknown_jobs("\n".join(listing), known):
        confirm = await transport.run(confirm_argv(slurm_bin, job_id, user), timeout=30)
        if confirm.ok and confirm.stdout.split() == [job_id]:
            orphans.append((job_id, user))
    for job_id, user in orphans:
        log.warning("Job %s of %s is a workbench job no server of this hub owns: cancelling it", job_id, user)
        cancel = await transport.run([f"{slurm_bin}/scancel", job_id], as_user=user, timeout=30)
        if not cancel.ok:
            log.error("Could not cancel job %s of %s: %s", job_id, user, bounded(cancel.stderr))
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
