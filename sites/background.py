"""Tasks the hub starts and does not await: each is kept referenced until it ends (asyncio holds
only weak references to tasks, so an unreferenced one may vanish mid-run) and its failure is
logged instead of lost."""

from __future__ import annotations

import asyncio
import logging

_RUNNING: set[asyncio.Task] = set()


def in_background(coro, what: str, log: logging.Logger) -> asyncio.Task:
    """Run `coro` as a task; `what` names it in the log if it fails."""
    task = asyncio.ensure_future(coro)
    _RUNNING.add(task)
    task.add_done_callback(lambda done: _ended(done, what, log))
    return task


def _ended(task: asyncio.Task, what: str, log: logging.Logger) -> None:
    _RUNNING.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("%s failed: %s", what, error, exc_info=error)
