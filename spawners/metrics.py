"""The workbench's own figures for Prometheus, beside JupyterHub's: created once, in the default
registry, which the hub's /hub/metrics serves (a `read:metrics` token). Labels are the catalogue's
names (sites, partitions), Slurm's job states and fixed reasons, never a user's: the series stay
few, and a scrape shows nobody's activity.

JupyterHub's own spawn histogram ends at 600 s; a Slurm queue can hold a job for hours, so the
queue's buckets reach a day."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUEUE_WAIT = Histogram(
    "aifa_workbench_queue_wait_seconds",
    "From sbatch's answer to Slurm running the job (outcome ran), or to the start given up while "
    "the job still waited (outcome gave_up: stopped, or the hub's start timeout), per site and partition",
    ["site", "partition", "outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)
SPAWN_PHASE = Histogram(
    "aifa_workbench_spawn_phase_seconds",
    "How long each phase of a start took: submit (the site's checks and sbatch), "
    "server (from the job running to JupyterLab answering and proven)",
    ["site", "phase"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
REFUSALS = Counter(
    "aifa_workbench_spawn_refusals_total",
    "Starts refused: by the workbench's checks (admission:<step>), by the site (site:<reason>, at "
    "admission or at sbatch), or for want of the hub's reach (hub:reach)",
    ["reason"],
)

# a site's failures by the class that types them (sites.errors and its kin), most specific first
_SITE_REASONS = (
    ("NoHostKey", "host_key"),
    ("HostKeyMismatch", "host_key"),
    ("NoSiteAccount", "no_account"),
    ("CredentialRefused", "credentials"),
    ("SiteUnreachable", "unreachable"),
    ("SlurmNotAnswering", "slurm_down"),
    ("SlurmRefused", "slurm_refused"),
    ("HomeUnusable", "home"),
    ("RuntimeError_", "runtime"),
)


def site_reason(error: BaseException) -> str:
    """`site:<reason>` for a site's failure: a fixed word per kind, "other" for any other."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return "site:" + next((reason for name, reason in _SITE_REASONS if name in names), "other")


JOB_ENDS = Counter(
    "aifa_workbench_job_ends_total",
    "Servers' jobs that ended, per site and how: Slurm's final state, or the hub's stop "
    "(stopped, start failed, start timeout, or the hub's own reason)",
    ["site", "ending"],
)

# Slurm's final states (squeue/sacct), GONE (Slurm forgot the job); anything else counts as OTHER
JOB_STATES = frozenset(
    "BOOT_FAIL CANCELLED COMPLETED DEADLINE FAILED NODE_FAIL OUT_OF_MEMORY PREEMPTED TIMEOUT GONE".split()
)


def job_ended(site: str, ending: str, hub_endings: frozenset[str] = frozenset()) -> None:
    """Count an end: `ending` is Slurm's state ("CANCELLED by 123" counts as CANCELLED) or one of
    `hub_endings`, the hub's own words."""
    word = ending.split()[0].rstrip("+") if ending and ending not in hub_endings else ending
    known = word in JOB_STATES or word in hub_endings
    JOB_ENDS.labels(site=site, ending=word if known else "OTHER").inc()
