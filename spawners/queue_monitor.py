"""One queue monitor per site and credential: one `squeue` per interval for every job the hub
tracks there, however many users; spawners await state changes instead of polling Slurm.

Slurm not answering is not "job gone": a failed poll keeps the last known states and marks the
monitor unhealthy. Polls run every `interval` seconds, every `fast_interval` while a tracked job
waits or its server is starting, and at once when something asks (`hurry`, e.g. a job reporting its end).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .transport import CommandTimeout, LocalTransport

log = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING",
                 "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT"}
WAITING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
SQUEUE_FORMAT = "%i|%T|%r|%B|%S"

REASONS = {
    "None": "about to start",
    "Resources": "waiting for free resources (the GPUs or cores it asks for are in use)",
    "Priority": "waiting for jobs with a higher priority to start first",
    "Reservation": "waiting for the reservation to start",
    "BeginTime": "waiting for its start time",
    "Dependency": "waiting for another job to finish",
    "ReqNodeNotAvail": "waiting for nodes that are down, drained or reserved",
    "PartitionDown": "waiting: the partition is down",
    "PartitionTimeLimit": "held: it asks for more time than the partition allows",
    "AssocGrpGRES": "waiting: your project has reached its GPU limit",
    "AssocMaxJobsLimit": "waiting: your project has reached its limit of running jobs",
    "QOSMaxJobsPerUserLimit": "waiting: you have reached your limit of running jobs",
    "QOSMaxGRESPerUser": "waiting: you have reached your GPU limit",
    "JobHeldUser": "held by you (release it with scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "NodeFail": "a node it ran on failed",
    "NonZeroExitCode": "it ended with an error",
    "TimeLimit": "it reached its time limit",
}


def describe_reason(code: str) -> str:
    return REASONS.get(code, f"Slurm says: {code}")


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str            # Slurm's long state name, or GONE when Slurm no longer knows the job
    reason: str = ""
    node: str = ""
    start: str = ""       # actual start, or Slurm's estimate while pending ("" if none)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING") and bool(self.node)


def parse_squeue(output: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not (parts[0].isascii() and parts[0].isdigit()):
            continue
        job_id, state, reason, node, start = parts
        node = "" if node in ("n/a", "(null)") else node
        start = "" if start in ("N/A", "Unknown", "(null)") else start
        jobs[job_id] = JobInfo(job_id, state.split()[0], reason.strip("()"), node, start)
    return jobs


class QueueMonitor:
    """Tracks jobs on one site as one credential. Create through `QueueMonitor.for_key`."""

    _registry: dict[tuple, "QueueMonitor"] = {}

    def __init__(self, key: tuple, transport: LocalTransport, slurm_bin: str = "/usr/bin",
                 interval: float = 30.0, fast_interval: float = 1.0, timeout: float = 30.0,
                 logger: logging.Logger | None = None):
        self.key, self.transport, self.slurm_bin = key, transport, slurm_bin
        self.log = logger or log
        self.interval, self.fast_interval, self.timeout = interval, fast_interval, timeout
        self.jobs: dict[str, JobInfo | None] = {}
        self.starting: set[str] = set()   # jobs whose server is not up yet: watched at fast_interval
        self.slurm_ok = True
        self.last_error = ""
        self.polls = 0
        self.last_poll = 0.0
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @classmethod
    def for_key(cls, key: tuple, **kwargs) -> "QueueMonitor":
        """The monitor of (site, credential), created on first use."""
        monitor = cls._registry.get(key)
        if monitor is None:
            monitor = cls._registry[key] = cls(key, **kwargs)
        return monitor

    def track(self, job_id: str) -> None:
        """Follow `job_id` from now on (a new job is looked up at once; a known one costs nothing)."""
        if job_id not in self.jobs:
            self.jobs[job_id] = None
            self.hurry()

    def untrack(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.starting.discard(job_id)

    def watch_start(self, job_id: str) -> None:
        """Poll at fast_interval until `started(job_id)`: a job may die before its server is up."""
        self.starting.add(job_id)
        self.track(job_id)

    def started(self, job_id: str) -> None:
        self.starting.discard(job_id)

    def info(self, job_id: str) -> JobInfo | None:
        return self.jobs.get(job_id)

    def hurry(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake.set()
        self._ensure_running()

    async def wait_change(self, job_id: str, known: JobInfo | None, timeout: float) -> JobInfo | None:
        """Return the job's info once it differs from `known` (or after `timeout`)."""
        self._ensure_running()
        deadline = time.monotonic() + timeout
        while self.jobs.get(job_id) == known:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self.jobs.get(job_id)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_event_loop().create_task(self._run())

    def _next_delay(self) -> float:
        hurry = bool(self.starting) or any(info is None or info.waiting for info in self.jobs.values())
        return self.fast_interval if hurry or not self.slurm_ok else self.interval

    async def _run(self) -> None:
        while True:
            if self.jobs:
                await self.poll()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_delay())
            except asyncio.TimeoutError:
                pass

    async def poll(self) -> None:
        ids = sorted(self.jobs, key=int)
        argv = [f"{self.slurm_bin}/squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                f"--format={SQUEUE_FORMAT}"]
        self.polls += 1
        self.last_poll = time.monotonic()
        try:
            result = await self.transport.run(argv, timeout=self.timeout)
        except CommandTimeout as e:
            self._failed(str(e))
            return
        if not result.ok:
            self._failed(result.stderr.strip() or f"squeue exit status {result.returncode}")
            return
        if not self.slurm_ok:
            self.log.info("Slurm answers again (%s)", self.key)
        self.slurm_ok, self.last_error = True, ""
        seen = parse_squeue(result.stdout)
        changed = False
        for job_id in ids:
            new = seen.get(job_id, JobInfo(job_id, "GONE"))
            if job_id in self.jobs and self.jobs[job_id] != new:
                self.jobs[job_id] = new
                changed = True
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    def _failed(self, error: str) -> None:
        if self.slurm_ok:
            self.log.warning("Slurm did not answer (%s): %s; keeping every server, retrying", self.key, error)
        self.slurm_ok, self.last_error = False, error
