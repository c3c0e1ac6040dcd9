"""One queue monitor per site and credential: one `squeue` per interval for every job the hub
tracks there, however many users; spawners await state changes instead of polling Slurm.

Slurm not answering is not "job gone": a failed poll keeps the last known states and marks the
monitor unhealthy. Polls run every `interval` seconds, every `fast_interval` while a tracked job
waits or its server is starting, and at once when something asks (`hurry`, e.g. a job reporting its end).
A monitor whose last job left stops polling and leaves the registry; the next job makes a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aifa_workbench.sites.control import JobControl
from aifa_workbench.sites.errors import SiteError
from aifa_workbench.sites.slurm_cli import JobInfo

from aifa_workbench.sites.background import in_background

log = logging.getLogger(__name__)


class QueueMonitor:
    """Tracks jobs on one site as one credential. Create through `QueueMonitor.for_key`."""

    _registry: dict[tuple, "QueueMonitor"] = {}

    def __init__(
        self,
        key: tuple,
        control: JobControl,
        as_user: str | None = None,
        interval: float = 30.0,
        fast_interval: float = 1.0,
        logger: logging.Logger | None = None,
    ):
        self.key, self.control, self.as_user = key, control, as_user
        self.log = logger or log
        self.interval, self.fast_interval = interval, fast_interval
        self.jobs: dict[str, JobInfo | None] = {}
        self.starting: set[str] = set()  # jobs whose server is not up yet: watched at fast_interval
        self.slurm_ok = True
        self.last_error = ""
        self.polls = 0
        self.last_poll = 0.0
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listed = False  # made by for_key: back in the registry when it tracks a job again

    @classmethod
    def for_key(cls, key: tuple, **kwargs) -> "QueueMonitor":
        """The monitor of (site, credential), created on first use."""
        monitor = cls._registry.get(key)
        if monitor is None:
            monitor = cls._registry[key] = cls(key, **kwargs)
            monitor._listed = True
        return monitor

    def track(self, job_id: str) -> None:
        """Follow `job_id` from now on (a new job is looked up at once; a known one costs nothing)."""
        if job_id not in self.jobs:
            if self._listed:  # a caller may hold this monitor after its last job left it
                self._registry.setdefault(self.key, self)
            self.jobs[job_id] = None
            self.hurry()

    def untrack(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.starting.discard(job_id)
        if not self.jobs and self._registry.get(self.key) is self:
            del self._registry[self.key]

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
            self._task = in_background(self._run(), f"The queue monitor of {self.key}", self.log)

    def _next_delay(self) -> float:
        hurry = bool(self.starting) or any(info is None or info.waiting for info in self.jobs.values())
        return self.fast_interval if hurry or not self.slurm_ok else self.interval

    async def _run(self) -> None:
        # Ends once no job is left (checked with no await before returning, so `_ensure_running`
        # never sees a loop that is about to end as running); tracking a job starts it again.
        while self.jobs:
            try:
                await self.poll()
            except Exception as e:  # a bug, not Slurm: log it, keep every state, go on polling
                self.log.exception("Polling the queue of %s failed", self.key)
                self._failed(repr(e))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_delay())
            except asyncio.TimeoutError:
                pass

    async def poll(self) -> None:
        ids = list(self.jobs)
        self.polls += 1
        self.last_poll = time.monotonic()
        try:
            seen = await self.control.jobs(ids, as_user=self.as_user)
        except SiteError as e:
            self._failed(e.detail or str(e))
            return
        if not self.slurm_ok:
            self.log.info("Slurm answers again (%s)", self.key)
        self.slurm_ok, self.last_error = True, ""
        changed = False
        for job_id in ids:
            new = seen.get(job_id, JobInfo(job_id, "GONE"))
            if job_id in self.jobs:
                changed = changed or self.jobs[job_id] != new
                self.jobs[job_id] = new  # the latest word (its time left) even when nothing changed
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    def _failed(self, error: str) -> None:
        if self.slurm_ok:
            self.log.warning("Slurm did not answer (%s): %s; keeping every server, retrying", self.key, error)
        self.slurm_ok, self.last_error = False, error
