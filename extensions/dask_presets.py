"""Dask clusters from the site catalogue: `workbench.dask_cluster("gpu-workers", workers=4)`.

A preset is a spawn request in the catalogue (partition, GPUs, cores, memory, hours); the
notebook's own job gives the site, account, reservation and software environment. The request
goes through the same validation as a spawn request, so a preset asking for too much, or an
account the user lacks, is refused with a sentence before anything reaches Slurm.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import subprocess
import sys
from datetime import datetime

from aifa_workbench.hub_config.catalogue import Site
from aifa_workbench.spawners.request import JobRequest, RequestError, UserContext, parse_job_request
from aifa_workbench.spawners.slurm_facts import parse_reservations, parse_user_accounts

from .job_context import NotebookJob, WorkbenchError, scontrol_job

MAX_WORKERS = 64
MIN_WORKER_MINUTES = 5
OVERRIDABLE = ("partition", "gpus", "cpus", "memory_gb", "hours", "account")


def preset_request(site: Site, preset: str, job: NotebookJob, user: UserContext, overrides: dict) -> JobRequest:
    if preset not in site.dask_presets:
        names = ", ".join(site.dask_presets) or "none"
        raise WorkbenchError(f"There is no Dask preset {preset!r} on {site.title}; the presets are: {names}.")
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise WorkbenchError(f"dask_cluster() does not take {', '.join(unknown)}; "
                             f"you may change {', '.join(OVERRIDABLE)}.")
    own_account = {"account": job.account} if job.account else {}
    options = {**site.dask_presets[preset].options, "site": site.name,
               "environment": job.environment or site.default_environment, **own_account, **overrides}
    if "partition" in overrides:   # the preset's shape belongs to its own partition
        for key in ("gpus", "cpus", "memory_gb"):
            if key not in overrides:
                options.pop(key, None)
    if job.reservation:
        options["reservation"] = job.reservation
    try:
        return parse_job_request(options, {site.name: site}, user, site.name)
    except RequestError as e:
        raise WorkbenchError(f"The Dask preset {preset!r} cannot be used as asked: {e}") from None


def worker_walltime(request: JobRequest, minutes_left: int | None) -> str:
    """Workers stop with the notebook's job at the latest: they are useless once it is gone."""
    minutes = request.hours * 60
    if minutes_left is not None:
        if minutes_left < MIN_WORKER_MINUTES:
            raise WorkbenchError(f"Your session ends in {minutes_left} minutes, too soon to start Dask workers. "
                                 "Start a new session first.")
        minutes = min(minutes, minutes_left)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def gpu_directives(site: Site, request: JobRequest) -> list[str]:
    if request.gpus == 0:
        return []
    family = site.partitions[request.partition].family
    return [f"--gpus-per-node={request.gpus}"] if family == "lumi" else [f"--gres=gpu:{request.gpus}"]


def cluster_kwargs(site: Site, request: JobRequest, job: NotebookJob, minutes_left: int | None,
                   home: str, python: str) -> dict:
    """The SLURMCluster arguments for `request` (pure)."""
    environment = site.environments[request.environment]
    if environment.container:
        python = f"singularity exec {shlex.quote(environment.container)} python3"
    directives = ["--export=NONE", *gpu_directives(site, request)]
    if request.whole_node:
        directives.append("--exclusive")
    if request.reservation:
        directives.append(f"--reservation={request.reservation}")
    return {
        "queue": request.partition,
        "account": request.account,
        "cores": request.cpus,
        "processes": 1,
        "memory": f"{request.memory_gb}GB",
        "job_mem": f"{request.memory_gb}G",   # Slurm's --mem exactly as a spawn request would ask
        "walltime": worker_walltime(request, minutes_left),
        "interface": site.dask_interface,
        "local_directory": site.dask_local_directory,
        "job_name": f"aifa-dask-{job.user}",
        "log_directory": f"{home}/.aifa-workbench/dask-logs",
        "job_extra_directives": directives,
        "job_script_prologue": [f"export HOME={shlex.quote(home)}",
                                f"export PATH={shlex.quote(os.path.dirname(python.split()[-1]) or '/usr/bin')}"
                                ":/usr/local/bin:/usr/bin:/bin",
                                *environment.setup],
        "python": python,
        # Other users share nodes and networks: TLS with throw-away certificates (kept in a 0700
        # folder of the user's home, which workers read) so that only this user's workers and
        # clients reach the scheduler; the dashboard listens on loopback, for jupyter-server-proxy.
        "security": True,
        "shared_temp_directory": f"{home}/.aifa-workbench/dask-tls",
        "scheduler_options": {"dashboard_address": "127.0.0.1:0", "interface": site.dask_interface},
        "death_timeout": 60,   # a worker whose scheduler (this notebook) is gone ends its job
    }


def _run(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def user_context(job: NotebookJob, overrides: dict) -> UserContext:
    """The user's own accounts and reservations. The job's own account and reservation are the
    user's (Slurm accepted them); Slurm is asked (~0.2 s) only when another account is named."""
    if job.account and overrides.get("account", job.account) == job.account:
        return UserContext(accounts={job.site: (job.account,)},
                           reservations={job.site: (job.reservation,) if job.reservation else ()})
    accounts = parse_user_accounts(_run([f"{job.slurm_bin}/sacctmgr", "-nP", "show", "user", "withassoc",
                                         job.user, "format=defaultaccount,account"]))
    if not accounts and job.account:
        accounts = (job.account,)   # sacctmgr not reachable from the node: the job's own account
    reservations = parse_reservations(_run([f"{job.slurm_bin}/scontrol", "show", "reservation", "--oneliner"]),
                                      job.user, accounts)
    return UserContext(accounts={job.site: accounts}, reservations={job.site: reservations})


def minutes_left(job: NotebookJob) -> int | None:
    end = scontrol_job(job).get("end")
    return int((end - datetime.now()).total_seconds() // 60) if end else None


def dashboard_link_template() -> str:
    """Dask's dashboard link through the hub (jupyter-server-proxy): /user/<name>/proxy/<port>/status."""
    return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") + "proxy/{port}/status"


def prepare_cluster(preset: str, overrides: dict) -> dict:
    """Validate the preset against the catalogue and the job (asks Slurm); the SLURMCluster kwargs."""
    import dask

    job = NotebookJob.from_environ()
    site = job.catalogue_site()
    request = preset_request(site, preset, job, user_context(job, overrides), overrides)
    home = pwd.getpwuid(os.getuid()).pw_dir
    kwargs = cluster_kwargs(site, request, job, minutes_left(job), home, sys.executable)
    os.makedirs(kwargs["log_directory"], exist_ok=True)
    os.makedirs(kwargs["shared_temp_directory"], mode=0o700, exist_ok=True)
    os.chmod(kwargs["shared_temp_directory"], 0o700)
    dask.config.set({"distributed.dashboard.link": dashboard_link_template()})
    return kwargs


def dask_cluster(preset: str, workers: int = 1, **overrides):
    """A dask-jobqueue SLURMCluster shaped by a catalogue preset, scaled to `workers` workers.

    `cluster.job_script()` shows what will be submitted; `cluster.scale(n)` changes the number of
    workers; `cluster.close()` cancels them (they also end with this notebook's job)."""
    from dask_jobqueue import SLURMCluster

    if type(workers) is not int or not 0 <= workers <= MAX_WORKERS:
        raise WorkbenchError(f"'workers' must be a whole number from 0 to {MAX_WORKERS}.")
    cluster = SLURMCluster(**prepare_cluster(preset, overrides))
    if workers:
        cluster.scale(workers)
    return cluster


def first_preset() -> str:
    site = NotebookJob.from_environ().catalogue_site()
    if not site.dask_presets:
        raise WorkbenchError(f"{site.title} has no Dask presets in the workbench catalogue.")
    return next(iter(site.dask_presets))


async def _default_cluster_async():
    from dask_jobqueue import SLURMCluster

    kwargs = await asyncio.to_thread(lambda: prepare_cluster(first_preset(), {}))   # Slurm, off the loop
    return await SLURMCluster(**kwargs, asynchronous=True)


def default_cluster(asynchronous: bool = False):
    """The cluster JupyterLab's Dask tab creates (dask-labextension's factory, set by the batch
    script, awaited in the Jupyter server's event loop): the site's first preset, no workers yet."""
    if asynchronous:
        return _default_cluster_async()
    return dask_cluster(first_preset(), workers=0)
