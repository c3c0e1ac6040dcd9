"""Make Slurm and the hub agree: a job of this hub (named aifa-wb-<hub id>-<user>) that no server
of the hub owns is logged and cancelled, so none is left running unaccounted.

Runs inside the hub process once it has started and loaded its spawners (their job ids are in
memory: a spawn in flight already has one), then every `interval` seconds. Job names carry the
hub's id: a second hub on the same cluster never takes this hub's jobs for its own orphans.
"""

from __future__ import annotations

import asyncio

from aifa_workbench.sites import slurm_cli as cli
from aifa_workbench.sites.control import JobControl
from aifa_workbench.sites.errors import SiteError

from aifa_workbench.sites.background import in_background
from .tunnel_reconcile import keep_routes, reconcile_tunnels


def hub_usernames(app) -> set[str]:
    """Every user the hub knows (its database), whose jobs the reconciler looks for."""
    from jupyterhub import orm

    return {user.name for user in app.db.query(orm.User)}


def known_jobs(app) -> tuple[set[tuple[str, str]], bool]:
    """(site, job id) of every job the hub's spawners hold (ids are per site: job 123 on one
    cluster is not job 123 on another), and whether any spawner is busy (starting or stopping)."""
    jobs, busy = set(), False
    for user in list(app.users.values()):
        for spawner in list(user.spawners.values()):
            job_id = getattr(spawner, "job_id", "")
            if job_id:
                jobs.add((getattr(spawner, "site_name", ""), job_id))
            busy = busy or bool(spawner.pending)
    return jobs, busy


def known_job_ids(app, site: str) -> tuple[set[str], bool]:
    """The ids of the jobs the hub's spawners hold on `site`, and whether any spawner is busy."""
    jobs, busy = known_jobs(app)
    return {job_id for job_site, job_id in jobs if job_site == site}, busy


async def find_orphans(app, control: JobControl, hub_id: str) -> list[tuple[str, str]]:
    """This hub's jobs on the site that no spawner holds. The hub's spawners are read after
    Slurm's answer: a job submitted while the query ran is then known (or a spawner busy)."""
    listing = [await control.workbench_jobs(names) for names in cli.job_name_batches(hub_id, hub_usernames(app))]
    known, busy = known_job_ids(app, control.site_name)
    if busy:
        return []  # a job id may be moments from being recorded: look again next time
    orphans = []
    for job_id, user in cli.unknown_jobs("\n".join(listing), hub_id, known):
        if await control.is_workbench_job(job_id, cli.job_name(hub_id, user), user):
            orphans.append((job_id, user))
    known_now, _ = known_job_ids(app, control.site_name)
    return [(job_id, user) for job_id, user in orphans if job_id not in known_now]


async def find_own_orphans(control: JobControl, hub_id: str, hub_user: str, site_user: str, known) -> list[str]:
    """On a site with PrivateData, one user's orphans, read with that user's own login: the slow
    safety net behind the jobs' own reports (one query per user and site per interval)."""
    listing = await control.workbench_jobs(cli.job_name(hub_id, hub_user), as_user=hub_user)
    orphans = []
    for job_id in cli.own_unknown_jobs(listing, hub_id, hub_user, site_user, known()):
        if await control.is_workbench_job(job_id, cli.job_name(hub_id, hub_user), site_user, as_user=hub_user):
            orphans.append(job_id)
    now_known = known()
    return [job_id for job_id in orphans if job_id not in now_known]


async def reconcile_users_once(app, control: JobControl, hub_id: str, identities) -> list[tuple[str, str]]:
    """Every hub user with an account and a key on the site, each through their own login."""

    def known_here() -> set[str]:
        return known_job_ids(app, control.site_name)[0]

    cancelled = []
    for user in sorted(hub_usernames(app)):
        site_user = identities.site_username(user, control.site_name)
        if not site_user or not identities.key_store.has_key(user, control.site_name):
            continue
        if known_jobs(app)[1]:
            return cancelled  # a spawn in flight: look again next time
        try:
            for job_id in await find_own_orphans(control, hub_id, user, site_user, known_here):
                app.log.warning(
                    "Job %s of %s on %s is a job of this hub no server owns: cancelling it",
                    job_id,
                    user,
                    control.site_name,
                )
                await control.cancel(user, job_id)
                cancelled.append((job_id, user))
        except SiteError as e:
            app.log.warning("Reconciling %s's jobs on %s skipped: %s", user, control.site_name, e.detail or e)
    return cancelled


async def reconcile_once(app, control: JobControl, hub_id: str) -> list[tuple[str, str]]:
    try:
        orphans = await find_orphans(app, control, hub_id)
    except SiteError as e:
        app.log.warning("Reconciling %s skipped: %s", control.site_name, e.detail or e)
        return []
    for job_id, user in orphans:
        app.log.warning("Job %s of %s is a job of this hub no server owns: cancelling it", job_id, user)
        try:
            await control.cancel(user, job_id)
        except SiteError as e:
            app.log.error("Could not cancel job %s of %s: %s", job_id, user, e.detail or e)
    return orphans


async def _run(hub, controls, hub_id: str, interval: float, identities=None, tunnels: dict | None = None) -> None:
    app = hub()
    await app._start_future
    if tunnels:
        in_background(keep_routes(app, tunnels["socket_path"]), "Keeping moved forwards' routes", app.log)
    while True:
        for control in controls:
            try:
                if control.shared_queries:
                    orphans = await reconcile_once(app, control, hub_id)
                else:
                    orphans = await reconcile_users_once(app, control, hub_id, identities)
                app.log.info(
                    "Reconciled Slurm on %s with the hub: %d unknown job(s) of this hub cancelled",
                    control.site_name,
                    len(orphans),
                )
            except Exception:
                app.log.exception("Reconciling Slurm on %s with the hub failed", control.site_name)
        if tunnels:
            try:
                await reconcile_tunnels(app, **tunnels)
            except Exception:
                app.log.exception("Reconciling the tunnels with the hub failed")
        await asyncio.sleep(interval)


def start_reconciler(
    hub, controls, hub_id: str, interval: float = 600, identities=None, tunnels: dict | None = None
) -> None:
    """Schedule reconciliation of every site, once `hub()` (the running JupyterHub app) has started:
    as the hub where it reads the whole queue (the local cluster), per user through their own logins
    elsewhere; and of the tunnels, with `tunnels` the arguments of tunnel_reconcile.reconcile_tunnels
    but `app` (call from jupyterhub_config.py)."""
    import logging

    log = logging.getLogger("JupyterHub")
    asyncio.get_event_loop().call_soon(
        lambda: in_background(_run(hub, list(controls), hub_id, interval, identities, tunnels), "The reconciler", log)
    )
