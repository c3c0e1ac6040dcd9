"""What Slurm says about a user and the cluster: parsers (pure) and the commands that feed them.

Used for the local site (`accounts_from: slurm`): the user's accounts, the reservations they may
use, and live load per partition for the spawn form.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from .request import is_safe_name
from .transport import CommandTimeout, LocalTransport, bounded

log = logging.getLogger(__name__)


def parse_user_accounts(sacctmgr_output: str) -> tuple[str, ...]:
    """`sacctmgr -nP show user withassoc U format=defaultaccount,account` -> default account first."""
    default, accounts = None, []
    for line in sacctmgr_output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 2 or not all(is_safe_name(p) for p in parts):
            continue
        default = default or parts[0]
        if parts[1] not in accounts:
            accounts.append(parts[1])
    if default in accounts:
        accounts.remove(default)
        accounts.insert(0, default)
    return tuple(accounts)


def _fields(line: str) -> dict:
    return dict(token.split("=", 1) for token in line.split() if "=" in token)


def parse_reservations(scontrol_output: str, username: str, accounts) -> tuple[str, ...]:
    """`scontrol show reservation --oneliner` -> the reservations `username` may use."""
    usable = []
    for line in scontrol_output.splitlines():
        fields = _fields(line)
        name = fields.get("ReservationName", "")
        if not is_safe_name(name) or fields.get("State") not in ("ACTIVE", "INACTIVE"):
            continue
        users = set(fields.get("Users", "").split(","))
        res_accounts = set(fields.get("Accounts", "").split(","))
        if username in users or res_accounts & set(accounts):
            usable.append(name)
    return tuple(usable)


def _gpu_count(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isascii() and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_partition_load(sinfo_output: str, squeue_pending_output: str) -> dict[str, dict]:
    """`sinfo -h -N -O PartitionName:40,Gres:60,GresUsed:80` and `squeue -h -t PD -o %P` ->
    {partition: {"idle_gpus": n, "total_gpus": n, "pending": n}}."""
    load: dict[str, dict] = {}
    for line in sinfo_output.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        entry = load.setdefault(parts[0].rstrip("*"), {"idle_gpus": 0, "total_gpus": 0, "pending": 0})
        total, used = _gpu_count(parts[1]), _gpu_count(parts[2])
        entry["total_gpus"] += total
        entry["idle_gpus"] += max(total - used, 0)
    for partition, count in Counter(squeue_pending_output.split()).items():
        load.setdefault(partition, {"idle_gpus": 0, "total_gpus": 0, "pending": 0})["pending"] = count
    return load


# (slurm_bin, username) -> (expires at, accounts). sacctmgr takes ~0.2 s, on every spawn and form.
_ACCOUNTS_CACHE: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}


class SharedAnswers:
    """Answers of read-only queries, reused for `ttl` seconds; callers asking while a query runs
    wait for that one (40 form renders or refused spawns at once cost one scontrol, not 40). The
    query runs as a task of its own: a caller that gives up does not cancel it for the others.
    `fresh` asks again unless the answer is younger than `min_fresh` seconds."""

    def __init__(self, ttl: float, min_fresh: float = 2.0):
        self.ttl, self.min_fresh = ttl, min_fresh
        self._answers: dict[tuple, tuple[float, object]] = {}
        self._running: dict[tuple, asyncio.Task] = {}

    async def get(self, key: tuple, query, fresh: bool = False):
        answered, answer = self._answers.get(key, (-1e9, None))
        age = time.monotonic() - answered
        if age < (self.min_fresh if fresh else self.ttl):
            return answer
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(self._ask(key, query))
        return await asyncio.shield(task)

    async def _ask(self, key: tuple, query):
        try:
            answer = await query()
            self._answers[key] = (time.monotonic(), answer)
            return answer
        finally:
            self._running.pop(key, None)


# scontrol (reservations) and sinfo+squeue (partition load), for every form render and spawn try.
_CLUSTER_ANSWERS = SharedAnswers(ttl=10.0)


class SlurmFacts:
    """Run the queries (as the hub's own user: they read, never change)."""

    def __init__(self, transport: LocalTransport, slurm_bin: str = "/usr/bin", timeout: float = 15,
                 accounts_ttl: float = 0):
        self.transport, self.slurm_bin, self.timeout = transport, slurm_bin, timeout
        self.accounts_ttl = accounts_ttl

    async def _output(self, argv) -> str:
        try:
            result = await self.transport.run([f"{self.slurm_bin}/{argv[0]}", *argv[1:]], timeout=self.timeout)
        except CommandTimeout as e:
            log.warning("%s", e)
            return ""
        if not result.ok:
            log.warning("%s failed: %s", argv[0], bounded(result.stderr))
        return result.stdout if result.ok else ""

    async def user_accounts(self, username: str) -> tuple[str, ...]:
        """The user's accounts, default first; a non-empty answer is reused for `accounts_ttl` s
        (Slurm still enforces associations at sbatch, so a stale entry costs a refusal, no more)."""
        key = (self.slurm_bin, username)
        expires, cached = _ACCOUNTS_CACHE.get(key, (0.0, ()))
        if cached and time.monotonic() < expires:
            return cached
        accounts = parse_user_accounts(await self._output(
            ["sacctmgr", "-nP", "show", "user", "withassoc", username, "format=defaultaccount,account"]))
        if accounts and self.accounts_ttl > 0:
            _ACCOUNTS_CACHE[key] = (time.monotonic() + self.accounts_ttl, accounts)
        return accounts

    async def reservations(self, username: str, accounts, wanted: str | None = None) -> tuple[str, ...]:
        """The reservations the user may use; Slurm is asked again if `wanted` is not among them
        (it may have been created since the last answer)."""
        async def query():
            return await self._output(["scontrol", "show", "reservation", "--oneliner"])
        key = (self.slurm_bin, "reservations")
        usable = parse_reservations(await _CLUSTER_ANSWERS.get(key, query), username, accounts)
        if wanted and isinstance(wanted, str) and wanted not in usable:
            usable = parse_reservations(await _CLUSTER_ANSWERS.get(key, query, fresh=True), username, accounts)
        return usable

    async def partition_load(self) -> dict[str, dict]:
        return await _CLUSTER_ANSWERS.get((self.slurm_bin, "load"), self._query_partition_load)

    async def _query_partition_load(self) -> dict[str, dict]:
        sinfo = await self._output(["sinfo", "-h", "-N", "-O", "PartitionName:40,Gres:60,GresUsed:80"])
        pending = await self._output(["squeue", "-h", "-t", "PD", "-o", "%P"])
        return parse_partition_load(sinfo, pending)
