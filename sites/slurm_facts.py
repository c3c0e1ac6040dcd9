"""What a site's Slurm says about a user and its partitions, asked through its job control and
shared between callers: the user's accounts (sites with `accounts_from: slurm`), the reservations
they may use, and live load per partition for the spawn form.
"""

from __future__ import annotations

import asyncio
import logging

from aifa_workbench.model.ttl_cache import MISSING, TtlCache
from .control import JobControl
from .slurm_cli import parse_reservations, reservation_windows

log = logging.getLogger(__name__)


# (site, username) -> accounts. sacctmgr takes ~0.2 s, on every spawn and form.
_ACCOUNTS_CACHE = TtlCache()


def forget_accounts(site_name: str, username: str) -> None:
    """A user's accounts changed here (they joined a course): ask Slurm again next time."""
    _ACCOUNTS_CACHE.forget((site_name, username))


class SharedAnswers:
    """Answers of read-only queries, reused for `ttl` seconds; callers asking while a query runs
    wait for that one (40 form renders or refused spawns at once cost one scontrol, not 40). The
    query runs as a task of its own: a caller that gives up does not cancel it for the others.
    `fresh` asks again unless the answer is younger than `min_fresh` seconds."""

    def __init__(self, ttl: float, min_fresh: float = 2.0):
        self.ttl, self.min_fresh = ttl, min_fresh
        self._answers = TtlCache()
        self._running: dict[tuple, asyncio.Task] = {}

    async def get(self, key: tuple, query, fresh: bool = False):
        answer = self._answers.get(key, max_age=self.min_fresh if fresh else None)
        if answer is not MISSING:
            return answer
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(self._ask(key, query))
        return await asyncio.shield(task)

    async def _ask(self, key: tuple, query):
        try:
            answer = await query()
            self._answers.put(key, answer, self.ttl)
            return answer
        finally:
            self._running.pop(key, None)


# scontrol (reservations) and sinfo+squeue (partition load), for every form render and spawn try.
_CLUSTER_ANSWERS = SharedAnswers(ttl=10.0)


class SlurmFacts:
    """What a site's Slurm says about a user and its partitions, through the site's job control.
    Failures propagate as sites.errors (never read as "no accounts")."""

    def __init__(self, control: JobControl, accounts_ttl: float = 0):
        self.control, self.accounts_ttl = control, accounts_ttl

    async def user_accounts(self, username: str, site_user: str | None = None) -> tuple[str, ...]:
        """The user's accounts, default first; a non-empty answer is reused for `accounts_ttl` s
        (Slurm still enforces associations at sbatch, so a stale entry costs a refusal, no more)."""
        key = (self.control.site_name, username)
        cached = _ACCOUNTS_CACHE.get(key, ())
        if cached:
            return cached
        accounts = await self.control.accounts(username, site_user)
        if accounts and self.accounts_ttl > 0:
            _ACCOUNTS_CACHE.put(key, accounts, self.accounts_ttl)
        return accounts

    async def reservations(
        self, username: str, accounts, wanted: str | None = None, site_user: str | None = None
    ) -> tuple[str, ...]:
        """The reservations the user may use; Slurm is asked again if `wanted` is not among them
        (it may have been created since the last answer)."""
        as_user = self.control.query_user(username)
        key = (self.control.site_name, as_user, "reservations")

        async def query():
            return await self.control.reservations_listing(as_user)

        who = site_user or username
        usable = parse_reservations(await _CLUSTER_ANSWERS.get(key, query), who, accounts)
        if wanted and isinstance(wanted, str) and wanted not in usable:
            usable = parse_reservations(await _CLUSTER_ANSWERS.get(key, query, fresh=True), who, accounts)
        return usable

    async def reservation_windows(self, username: str, names) -> dict[str, dict]:
        """Partition, start and end of the reservations `names` (from the listing just read)."""
        as_user = self.control.query_user(username)

        async def query():
            return await self.control.reservations_listing(as_user)

        return reservation_windows(
            await _CLUSTER_ANSWERS.get((self.control.site_name, as_user, "reservations"), query), set(names)
        )

    async def budgets(
        self, username: str, accounts, site_user: str | None = None, fresh: bool = False
    ) -> dict[str, dict]:
        """The budgets of `accounts` that bind the user, in billing-minutes (sites.slurm_cli.parse_budgets)."""
        key = (self.control.site_name, username, "budgets", tuple(accounts))
        return await _CLUSTER_ANSWERS.get(key, lambda: self.control.budgets(username, accounts, site_user), fresh=fresh)

    async def partition_load(self, username: str | None = None) -> dict[str, dict]:
        as_user = self.control.query_user(username)
        return await _CLUSTER_ANSWERS.get(
            (self.control.site_name, as_user, "load"), lambda: self.control.partition_load(as_user)
        )
