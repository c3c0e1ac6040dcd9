"""The notebook's own Slurm job, as seen from inside it: which site, partition, account, node,
GPUs, how long it has left and what it has cost so far.

Pure parts (`NotebookJob.from_environ`, `parse_scontrol_job`, `job_status`) are tested without
Slurm; `scontrol_job`, `cached_scontrol_job` and `current_status` are the thin glue that reads the real job.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime

from aifa_workbench.model.budget import budget_from_lumi_file, budgets_from_slurm
from aifa_workbench.model.catalogue import Site, load_catalogue
from aifa_workbench.model.cost import cost_unit, estimate_cost
from aifa_workbench.model.ttl_cache import MISSING, TtlCache
from aifa_workbench.sites import slurm_cli as cli


class WorkbenchError(RuntimeError):
    """Something a notebook user asked for cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class NotebookJob:
    job_id: str
    user: str
    site: str
    environment: str
    account: str
    partition: str
    reservation: str | None
    node: str
    catalogue_dir: str = ""
    slurm_bin: str = "/usr/bin"
    name: str | None = None  # as Slurm named it at the start (None: not known)

    @classmethod
    def from_environ(cls, env=None) -> "NotebookJob":
        env = os.environ if env is None else env
        if not env.get("SLURM_JOB_ID") or not env.get("AIFA_WORKBENCH_SITE"):
            raise WorkbenchError(
                "This notebook does not run inside a workbench job, so there is no job to "
                "describe or to start Dask workers from. Start a server from the workbench "
                "hub and open the notebook there."
            )
        return cls(
            job_id=env["SLURM_JOB_ID"],
            user=env.get("USER", ""),
            site=env["AIFA_WORKBENCH_SITE"],
            environment=env.get("AIFA_WORKBENCH_ENVIRONMENT", ""),
            account=env.get("SLURM_JOB_ACCOUNT", ""),
            partition=env.get("SLURM_JOB_PARTITION", ""),
            reservation=env.get("SLURM_JOB_RESERVATION") or None,
            node=env.get("SLURMD_NODENAME", ""),
            catalogue_dir=env.get("AIFA_WORKBENCH_CATALOGUE", ""),
            slurm_bin=env.get("AIFA_WORKBENCH_SLURM_BIN", "/usr/bin"),
            name=env.get("SLURM_JOB_NAME"),
        )

    def catalogue_site(self) -> Site:
        sites = process_catalogue(self.catalogue_dir)
        if self.site not in sites:
            raise WorkbenchError(f"The site {self.site!r} of this job is not in the workbench catalogue.")
        return sites[self.site]


@functools.lru_cache(maxsize=4)
def process_catalogue(directory: str) -> dict[str, Site]:
    """The catalogue, read and validated once per process: it does not change under a running job,
    and every open tab asks the job's status (a failed read is not kept: the next request retries)."""
    return load_catalogue(directory or None)


def parse_tres(tres: str) -> dict[str, str]:
    """'cpu=2,mem=8G,node=1,billing=2,gres/gpu=1' -> {'cpu': '2', 'mem': '8G', ..., 'gres/gpu': '1'}"""
    return dict(item.split("=", 1) for item in tres.split(",") if "=" in item)


def memory_gb(value: str) -> float:
    units = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}
    value = value.strip()
    if value and value[-1].upper() in units:
        return float(value[:-1]) * units[value[-1].upper()]
    return float(value or 0) / 1024  # plain numbers are MB


def parse_scontrol_job(line: str, job_name: str | None = None) -> dict:
    """`scontrol show job -o ID` -> the fields the job panel needs (times as naive datetimes).

    scontrol prints free text unquoted: the job's name (its second field) and, after every field
    read here, its comment, command and paths. So the name's span is skipped (the job's own name
    where it is known, else up to the last ` UserId=`), and of the rest the first occurrence
    counts: neither a name nor a comment such as `x EndTime=2030-01-01T00:00:00` passes for a field."""
    fields: dict[str, str] = {}
    for token in _after_the_name(line, job_name).split():
        if "=" in token:
            key, value = token.split("=", 1)
            fields.setdefault(key, value)
    tres = parse_tres(fields.get("AllocTRES") or fields.get("TRES") or fields.get("ReqTRES", ""))

    def when(key):
        value = fields.get(key, "")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None

    gpus = sum(
        int(v) for k, v in tres.items() if k.startswith("gres/gpu") and ":" not in k and v.isascii() and v.isdigit()
    )
    return {
        "state": fields.get("JobState", ""),
        "node": fields.get("NodeList", ""),
        "start": when("StartTime"),
        "end": when("EndTime"),
        "cpus": int(tres.get("cpu", fields.get("NumCPUs", "0")) or 0),
        "memory_gb": round(memory_gb(tres.get("mem", "0")), 1),
        "gpus": gpus,
    }


def environ_job_record(env) -> dict | None:
    """The fields of `parse_scontrol_job` from what Slurm puts in every job's environment, for
    where its commands are not at hand (inside a container's image, which has no Slurm): None
    unless Slurm gave the job's end (SLURM_JOB_END_TIME, Slurm >= 23.02)."""

    def number(key: str) -> int | None:
        value = env.get(key, "")
        return int(value) if value.isascii() and value.isdigit() else None

    end, start = number("SLURM_JOB_END_TIME"), number("SLURM_JOB_START_TIME")
    if end is None:
        return None
    gpus = [g for g in (env.get("SLURM_JOB_GPUS") or env.get("SLURM_STEP_GPUS") or "").split(",") if g]
    return {
        "state": "RUNNING",
        "node": env.get("SLURMD_NODENAME", ""),
        "start": datetime.fromtimestamp(start) if start is not None else None,
        "end": datetime.fromtimestamp(end),
        "cpus": number("SLURM_CPUS_ON_NODE") or 0,
        "memory_gb": round((number("SLURM_MEM_PER_NODE") or 0) / 1024, 1),
        "gpus": len(gpus),
    }


def _after_the_name(line: str, job_name: str | None) -> str:
    _, found, rest = line.partition(" JobName=")
    if not found:
        return line
    if job_name is not None and rest.startswith(job_name + " UserId="):
        return rest[len(job_name) :]
    _, _, after = rest.rpartition(" UserId=")  # renamed since: the last one is the least wrong
    return " UserId=" + after


def job_status(job: NotebookJob, site: Site, slurm: dict, now: datetime) -> dict:
    """What the job panel and the walltime guard show (JSON-ready)."""
    part = site.partitions.get(job.partition)
    start, end = slurm.get("start"), slurm.get("end")
    seconds_left = max(0, int((end - now).total_seconds())) if end else None
    hours_run = max(0.0, (now - start).total_seconds() / 3600) if start else 0.0
    per_hour = estimate_cost(part, slurm["gpus"], slurm["cpus"], int(slurm["memory_gb"]), 1) if part else None
    return {
        "job_id": job.job_id,
        "site": site.name,
        "site_title": site.title,
        "partition": job.partition,
        "partition_title": part.title if part else job.partition,
        "node": slurm.get("node") or job.node,
        "account": job.account,
        "reservation": job.reservation,
        "gpus": slurm["gpus"],
        "gpu_label": site.gpu_label,
        "cpus": slurm["cpus"],
        "memory_gb": slurm["memory_gb"],
        "started": start.isoformat() if start else None,
        "ends": end.isoformat() if end else None,
        "seconds_left": seconds_left,
        "cost_unit": cost_unit(part) if part else site.billing_unit,
        "cost_per_hour": round(per_hour, 3) if per_hour is not None else None,
        "cost_so_far": round(per_hour * hours_run, 3) if per_hour is not None else None,
    }


CACHE_SECONDS = 60
_SLURM_CACHE = TtlCache(CACHE_SECONDS)


def cached_scontrol_job(job: NotebookJob) -> dict:
    """The job's Slurm record, asked at most once a minute per process: every open JupyterLab tab
    polls the status, and the end time is all that changes (rarely)."""
    record = _SLURM_CACHE.get(job.job_id)
    if record is MISSING:
        record = scontrol_job(job)
        _SLURM_CACHE.put(job.job_id, record)
    return record


def scontrol_job(job: NotebookJob, timeout: float = 15, env=None) -> dict:
    """Ask Slurm about the job (as the user, from inside the job); where that fails or the
    commands are missing (an image without Slurm), what Slurm put in the job's environment."""
    try:
        result = subprocess.run(
            cli.job_record_argv(job.slurm_bin, job.job_id), capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        problem = (
            f"Slurm's commands are not in this environment (its image has none), and Slurm did not "
            f"say when job {job.job_id} ends. The job runs on; the hub's Sessions page shows its end."
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"Slurm did not answer about job {job.job_id} ({e}). Try again in a minute."
    else:
        if result.returncode == 0 and result.stdout.strip():
            return parse_scontrol_job(result.stdout.strip().splitlines()[0], job.name)
        problem = f"Slurm knows nothing about job {job.job_id}: {result.stderr.strip() or 'no answer'}."
    record = environ_job_record(os.environ if env is None else env)
    if record is None:
        raise WorkbenchError(problem)
    return record


def budget_text(job: NotebookJob, site: Site, timeout: float = 15) -> str | None:
    """What is left of the job's project (best effort: None when unknown). LUMI: its billing file,
    here on the site; Slurm: the association manager, shown only when it shows the project's own
    record (PrivateData=usage may show a user only their share, which is not the project's)."""
    if not site.budget or not cli.is_slurm_name(job.account or ""):
        return None
    if site.budget["source"] == "lumi_project_info":
        try:
            with open(site.budget["path"].replace("{project}", job.account), encoding="utf-8") as f:
                budget = budget_from_lumi_file(f.read(65536), job.account, site.billing_unit)
        except OSError:
            return None
        return budget.text() if budget else None
    try:
        result = subprocess.run(
            cli.budgets_argv(job.slurm_bin, [job.account]), capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not cli.shows_account_record(result.stdout, job.account):
        return None
    minutes = cli.parse_budgets(result.stdout, job.user)
    budget = budgets_from_slurm(minutes, site.budget.get("per_unit_hour", 1), site.billing_unit).get(job.account)
    return budget.text() if budget else None


_BUDGET_CACHE = TtlCache(CACHE_SECONDS)


def current_status(env=None, cached: bool = False) -> dict:
    job = NotebookJob.from_environ(env)
    site = job.catalogue_site()
    slurm = cached_scontrol_job(job) if cached else scontrol_job(job)
    budget = _BUDGET_CACHE.get(job.job_id) if cached else MISSING
    if budget is MISSING:
        budget = budget_text(job, site)
        _BUDGET_CACHE.put(job.job_id, budget)
    return {**job_status(job, site, slurm, datetime.now()), "budget": budget}
