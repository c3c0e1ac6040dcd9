"""Dask clusters from the site catalogue: `workbench.dask_cluster("gpu-workers", workers=4)`.

A preset is a spawn request in the catalogue (partition, GPUs, cores, memory, hours); the
notebook's own job gives the site, account, reservation and software environment. The request
goes through the same validation as a spawn request, so a preset asking for too much, or an
account the user lacks, is refused with a sentence before anything reaches Slurm.

Other users share the node and its loopback, so (besides TLS between scheduler and workers):
the scheduler's dashboard answers only under an unguessable path prefix, a secret of the cluster
kept in the notebook's memory and, for JupyterLab's Dask tab, in a 0600 file of the user's 0700
folder beside the cluster's TLS keys (never in a command line or the environment), and every
other path on its port is 404; workers serve no HTTP at all; each worker job works in a fresh
0700 directory that it creates itself, and the scheduler in one made by the notebook.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hmac
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime

from aifa_workbench.model.catalogue import Site
from aifa_workbench.model.files import write_atomically
from aifa_workbench.model.job_env import site_job_lines
from aifa_workbench.model.request import JobRequest, RequestError, UserContext, parse_job_request
from aifa_workbench.sites import slurm_cli as cli
from aifa_workbench.sites.slurm_cli import parse_reservations, parse_user_accounts

from . import dask_listing
from . import tls_error_queue
from .job_context import NotebookJob, WorkbenchError, scontrol_job

MAX_WORKERS = 64
MIN_WORKER_MINUTES = 5
OVERRIDABLE = ("partition", "gpus", "cpus", "memory_gb", "hours", "account")
SCRATCH_VARIABLE = "AIFA_DASK_SCRATCH"
# Worker jobs start with --export=NONE from the user's login environment, where Lmod's `module`
# (a shell function) may be missing: then the site's profile defines it (as in the notebook's job).
MODULE_FALLBACK = "type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true"
PRIVATE_DIRECTORY = ".aifa-workbench/dask-tls"  # 0700, in the user's home, which workers read
WORKER_SETUP_FILE = "aifa_dask_worker_setup.py"
# A worker and nanny preload: Dask workers always open an HTTP server (metrics, health) even
# without --no-dashboard; this closes it before the worker's event loop has served anything.
WORKER_SETUP = '''"""Written by AIFA Workbench: this Dask worker serves no HTTP (no dashboard, metrics or health),
and its TLS reads start with OpenSSL's error queue empty (python/cpython#148594)."""

try:
    from aifa_workbench.extensions import tls_error_queue
except ImportError:  # a worker's Python without the workbench
    GUARDED = False
else:
    GUARDED = tls_error_queue.install()


def dask_setup(server):
    server.aifa_tls_guard = GUARDED
    http_server = getattr(server, "http_server", None)
    if http_server is not None:
        http_server.stop()
    services = getattr(server, "services", None)  # a nanny has none of its own
    if isinstance(services, dict):
        services.pop("dashboard", None)
'''


def preset_request(site: Site, preset: str, job: NotebookJob, user: UserContext, overrides: dict) -> JobRequest:
    if preset not in site.dask_presets:
        names = ", ".join(site.dask_presets) or "none"
        raise WorkbenchError(f"There is no Dask preset {preset!r} on {site.title}; the presets are: {names}.")
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise WorkbenchError(
            f"dask_cluster() does not take {', '.join(unknown)}; you may change {', '.join(OVERRIDABLE)}."
        )
    own_account = {"account": job.account} if job.account else {}
    options = {
        **site.dask_presets[preset].options,
        "site": site.name,
        "environment": job.environment or site.default_environment,
        **own_account,
        **overrides,
    }
    if "partition" in overrides:  # the preset's shape belongs to its own partition
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
    minutes = round(request.hours * 60)
    if minutes_left is not None:
        if minutes_left < MIN_WORKER_MINUTES:
            raise WorkbenchError(
                f"Your session ends in {minutes_left} minutes, too soon to start Dask workers. "
                "Start a new session first."
            )
        minutes = min(minutes, minutes_left)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def gpu_directives(site: Site, request: JobRequest) -> list[str]:
    if request.gpus == 0:
        return []
    family = site.partitions[request.partition].family
    return [f"--gpus-per-node={request.gpus}"] if family == "lumi" else [f"--gres=gpu:{request.gpus}"]


def scratch_prologue(base: str) -> list[str]:
    """Job-script lines giving the worker job a scratch directory of its own: created by mktemp
    (a new name, mode 0700, never an existing directory, whoever made it), removed when the job
    ends, and the job's TMPDIR. `base` (the catalogue's dask_local_directory, admin-chosen and
    checked by the catalogue schema) is only the parent: a /tmp-like or per-user directory."""
    var = SCRATCH_VARIABLE
    return [
        f'{var}=$(mktemp -d "{base}/aifa-dask-XXXXXXXXXX") && [ -O "${var}" ] && [ ! -L "${var}" ] '
        f'|| {{ echo "aifa-workbench: cannot create a private Dask scratch directory in {base}" >&2; exit 1; }}',
        f"trap 'rm -rf -- \"${var}\"' EXIT",
        f'export TMPDIR="${var}"',
        "export DASK_DISTRIBUTED__WORKER__HTTP__ROUTES='[]'",
    ]


def cluster_kwargs(
    site: Site,
    request: JobRequest,
    job: NotebookJob,
    minutes_left: int | None,
    home: str,
    python: str,
    *,
    dashboard_secret: str,
    scheduler_directory: str,
) -> dict:
    """The SLURMCluster arguments for `request` (pure). `dashboard_secret` becomes the dashboard's
    path prefix; `scheduler_directory` is a fresh private directory for the scheduler."""
    environment = site.environments[request.environment]
    if environment.container:  # the notebook's own Python is the runtime inside the image: bind it in
        binds = f"--bind {shlex.quote(site.paths.runtime)} " if site.paths.runtime else ""
        python = f"singularity run {binds}{shlex.quote(environment.container)} {shlex.quote(python)}"
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
        "job_mem": f"{request.memory_gb}G",  # Slurm's --mem exactly as a spawn request would ask
        "walltime": worker_walltime(request, minutes_left),
        "interface": site.dask_interface,
        # the job's own directory (scratch_prologue), not a shared fixed name another user could own
        "local_directory": f'"${SCRATCH_VARIABLE}"',
        "job_name": f"aifa-dask-{job.user}",
        "log_directory": f"{home}/.aifa-workbench/dask-logs",
        "job_extra_directives": directives,
        "job_script_prologue": [
            *(MODULE_FALLBACK,) * bool(environment.setup),
            f"export HOME={shlex.quote(home)}",
            f"export PATH={shlex.quote(os.path.dirname(python.split()[-1]) or '/usr/bin')}"
            ":/usr/local/bin:/usr/bin:/bin",
            *scratch_prologue(site.dask_local_directory),
            *site_job_lines(site.partitions[request.partition].family, environment, request.whole_node, request.gpus),
            *environment.setup,
        ],
        "python": python,
        # No worker dashboard: nothing listens but the worker's and nanny's TLS ports (the preload
        # closes the HTTP server Dask opens anyway; loopback and no routes should it not).
        "worker_extra_args": [
            "--no-dashboard",
            "--dashboard-address",
            "127.0.0.1:0",
            "--preload",
            shlex.quote(f"{home}/{PRIVATE_DIRECTORY}/{WORKER_SETUP_FILE}"),
            "--preload-nanny",
            shlex.quote(f"{home}/{PRIVATE_DIRECTORY}/{WORKER_SETUP_FILE}"),
        ],
        # Other users share nodes and networks: TLS with throw-away certificates (kept in a 0700
        # folder of the user's home, which workers read) so that only this user's workers and
        # clients reach the scheduler. The dashboard listens on loopback under a secret prefix
        # (everything else 404, see sealed_scheduler_class), for jupyter-server-proxy.
        "security": True,
        "shared_temp_directory": f"{home}/{PRIVATE_DIRECTORY}",
        "scheduler_cls": sealed_scheduler_class(),
        "scheduler_options": {
            "dashboard_address": "127.0.0.1:0",
            "interface": site.dask_interface,
            "http_prefix": f"/{dashboard_secret}",
            "local_directory": scheduler_directory,
        },
        "death_timeout": 60,  # a worker whose scheduler (this notebook) is gone ends its job
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
        return UserContext(
            accounts={job.site: (job.account,)}, reservations={job.site: (job.reservation,) if job.reservation else ()}
        )
    accounts = parse_user_accounts(_run(cli.accounts_argv(job.slurm_bin, job.user)))
    if not accounts and job.account:
        accounts = (job.account,)  # sacctmgr not reachable from the node: the job's own account
    reservations = parse_reservations(_run(cli.reservations_argv(job.slurm_bin)), job.user, accounts)
    return UserContext(accounts={job.site: accounts}, reservations={job.site: reservations})


def require_sbatch(job: NotebookJob, site: Site) -> None:
    """Worker jobs are submitted with Slurm's sbatch, from this notebook's own environment: a
    container's image has none (LUMI's AI Factory images: Slurm runs outside them)."""
    if os.access(os.path.join(job.slurm_bin, "sbatch"), os.X_OK):
        return
    natives = [e.title for e in site.environments.values() if not e.container]
    instead = f" Start a session in {natives[0]} to use Dask presets." if natives else ""
    raise WorkbenchError(
        f"Dask presets submit their workers with Slurm's sbatch, which this environment does not have "
        f"(its image holds no Slurm commands).{instead}"
    )


def minutes_left(job: NotebookJob) -> int | None:
    end = scontrol_job(job).get("end")
    return int((end - datetime.now()).total_seconds() // 60) if end else None


def dashboard_link_template() -> str:
    """Dask's dashboard link through the hub (jupyter-server-proxy): /user/<name>/proxy/<port>/status,
    for the notebook's other clusters (LocalCluster); workbench clusters' links carry their secret
    prefix (cluster_class, dashboard_link)."""
    return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") + "proxy/{port}/status"


def dashboard_link(port: int, http_prefix: str, environ=None) -> str:
    """/user/<name>/proxy/<port>/<secret>/status: jupyter-server-proxy asks for the user's login."""
    environ = os.environ if environ is None else environ
    return f"{environ.get('JUPYTERHUB_SERVICE_PREFIX', '/')}proxy/{port}/{http_prefix.strip('/')}/status"


def seal_dashboard(scheduler, http_prefix: str) -> None:
    """Answer 404 to any path outside `http_prefix` on the dashboard's port. Dask serves a few
    routes outside its prefix, and they give the prefix away: `/` redirects to <prefix>/status,
    `/sitemap.json` lists every route. Bokeh's pages also name their scripts from the server's
    root (/<prefix>/static/...), which is not where jupyter-server-proxy serves them: they are
    made relative to the page (every Dask page is one level under the prefix).
    Called in the Scheduler's __init__, before its event loop has served any request."""
    from bokeh.server.server import BokehTornado
    from tornado import web

    app = scheduler.http_application
    inner = app.find_handler
    gate = ("/" + http_prefix.strip("/") + "/").encode()

    def find_handler(request, **kwargs):
        path = (request.path or "").encode("utf-8", "replace")
        if not (hmac.compare_digest(path[: len(gate)], gate) or hmac.compare_digest(path, gate[:-1])):
            return app.get_handler_delegate(request, web.ErrorHandler, {"status_code": 404})
        return inner(request, **kwargs)

    app.find_handler = find_handler
    for bokeh_app in app.applications:
        if isinstance(bokeh_app, BokehTornado):
            bokeh_app.resources = _page_relative_resources


def _page_relative_resources(absolute_url=None):
    from bokeh.resources import Resources
    from bokeh.server.views.static_handler import StaticHandler
    from bokeh.settings import settings

    mode = settings.resources(default="server")
    if mode in ("server", "server-dev"):
        return Resources(mode=mode, root_url="", path_versioner=StaticHandler.append_version)
    return Resources(mode=mode)


@functools.cache
def sealed_scheduler_class():
    """distributed's Scheduler whose dashboard answers only under its http_prefix (a secret)."""
    from distributed import Scheduler

    class SealedDashboardScheduler(Scheduler):
        def __init__(self, *args, http_prefix: str, **kwargs):
            if len(http_prefix.strip("/")) < 16:
                raise ValueError("the Dask dashboard needs a secret http_prefix")
            super().__init__(*args, http_prefix=http_prefix, **kwargs)
            if getattr(self, "http_application", None) is not None:
                seal_dashboard(self, http_prefix)

    return SealedDashboardScheduler


WORKER_COMMAND_NOTE = (
    "# The Dask worker: it joins your scheduler over TLS, with certificates made for this "
    "cluster (in ~/.aifa-workbench/dask-tls, readable by you only)."
)


def readable_job_script(script: str) -> str:
    """The worker job's script with its long worker command one option per line (the same
    command: shell line continuations), under a line saying what it is."""
    lines = script.rstrip("\n").split("\n")
    command = lines[-1]
    if "distributed.cli.dask_worker" not in command or "\\" in command:
        return script
    options = command.split(" --")
    lines[-1:] = [WORKER_COMMAND_NOTE, " \\\n    --".join(options)]
    return "\n".join(lines) + "\n"


@functools.cache
def cluster_class():
    """dask-jobqueue's SLURMCluster (same name, for dask-labextension's list) whose dashboard link
    carries its own scheduler's secret prefix, and whose job script reads well."""
    from dask_jobqueue import SLURMCluster as JobqueueSLURMCluster
    from dask_jobqueue.slurm import SLURMJob

    class ReadableSLURMJob(SLURMJob):
        def job_script(self):
            return readable_job_script(super().job_script())

    class SLURMCluster(JobqueueSLURMCluster):
        __doc__ = JobqueueSLURMCluster.__doc__
        job_cls = ReadableSLURMJob
        _workbench_note = None  # a notebook's cluster: its note for JupyterLab's Dask tab

        def scale(self, *args, **kwargs):
            result = super().scale(*args, **kwargs)
            note = self._workbench_note  # once: close() may clear it meanwhile (another thread)
            if note is not None:
                note.update(self)
            return result

        def close(self, *args, **kwargs):
            note, self._workbench_note = self._workbench_note, None  # closing scales to 0: no note again
            try:
                return super().close(*args, **kwargs)
            finally:
                if note is not None:
                    note.remove()

        @property
        def dashboard_link(self):
            try:
                port = self.scheduler_info["services"]["dashboard"]
            except KeyError:
                return ""
            return dashboard_link(port, self.scheduler_spec["options"]["http_prefix"])

    return SLURMCluster


def private_directory(base: str | None = None) -> str:
    """A fresh 0700 directory of this process (the scheduler's local directory), removed at exit."""
    path = tempfile.mkdtemp(prefix="aifa-dask-scheduler-", dir=base)
    atexit.register(shutil.rmtree, path, True)
    return path


def write_worker_setup(folder: str) -> str:
    """The worker preload, in the user's private folder (0600, replaced atomically)."""
    path = os.path.join(folder, WORKER_SETUP_FILE)
    write_atomically(path, WORKER_SETUP)
    return path


def prepare_cluster(preset: str, overrides: dict) -> dict:
    """Validate the preset against the catalogue and the job (asks Slurm); the SLURMCluster kwargs."""
    import dask

    tls_error_queue.install()  # the scheduler and the Client live in this process
    job = NotebookJob.from_environ()
    site = job.catalogue_site()
    request = preset_request(site, preset, job, user_context(job, overrides), overrides)
    require_sbatch(job, site)
    home = pwd.getpwuid(os.getuid()).pw_dir
    private = os.path.join(home, PRIVATE_DIRECTORY)
    os.makedirs(private, mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    kwargs = cluster_kwargs(
        site,
        request,
        job,
        minutes_left(job),
        home,
        sys.executable,
        dashboard_secret=secrets.token_urlsafe(24),
        scheduler_directory=private_directory(),
    )
    os.makedirs(kwargs["log_directory"], exist_ok=True)
    write_worker_setup(private)
    dask.config.set({"distributed.dashboard.link": dashboard_link_template()})
    return kwargs


def dask_cluster(preset: str | None = None, workers: int = 1, **overrides):
    """A dask-jobqueue SLURMCluster shaped by a catalogue preset (by default the site's first,
    so that a notebook runs on every site), scaled to `workers` workers.

    `cluster.job_script()` shows what will be submitted; `cluster.scale(n)` changes the number of
    workers; `cluster.close()` cancels them (they also end with this notebook's job)."""
    if type(workers) is not int or not 0 <= workers <= MAX_WORKERS:
        raise WorkbenchError(f"'workers' must be a whole number from 0 to {MAX_WORKERS}.")
    preset = first_preset() if preset is None else preset
    kwargs = prepare_cluster(preset, overrides)
    cluster = cluster_class()(**kwargs)
    name = dask_listing.cluster_name(preset, kwargs["queue"])
    cluster._workbench_note = dask_listing.NotebookClusterNote(
        cluster,
        pwd.getpwuid(os.getuid()).pw_dir,
        os.environ.get("SLURM_JOB_ID", ""),
        name,
        kwargs["cores"],
        kwargs["memory"],
    )
    if workers:
        cluster.scale(workers)
    return cluster


def default_cluster_name() -> str:
    """What the Dask tab's *New* makes, in words: the site's first preset and its partition."""
    site, preset = NotebookJob.from_environ().catalogue_site(), first_preset()
    return dask_listing.cluster_name(preset, site.dask_presets[preset].options["partition"])


def first_preset() -> str:
    site = NotebookJob.from_environ().catalogue_site()
    if not site.dask_presets:
        raise WorkbenchError(f"{site.title} has no Dask presets in the workbench catalogue.")
    return next(iter(site.dask_presets))


async def _default_cluster_async():
    kwargs = await asyncio.to_thread(lambda: prepare_cluster(first_preset(), {}))  # Slurm, off the loop
    return await cluster_class()(**kwargs, asynchronous=True)


def default_cluster(asynchronous: bool = False):
    """The cluster JupyterLab's Dask tab creates (dask-labextension's factory, set by the batch
    script, awaited in the Jupyter server's event loop): the site's first preset, no workers yet."""
    if asynchronous:
        return _default_cluster_async()
    return dask_cluster(first_preset(), workers=0)
