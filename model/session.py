"""A user's session as the hub's pages show it (pure): its card while the job lives, and what
ended, why and what it cost once it is over.

Times travel as epoch seconds (the pages show them in the reader's own zone); Slurm's absolute
times are the site's local time, read with the site's zone (catalogue `timezone`).
"""

from __future__ import annotations

import datetime
import zoneinfo

from aifa_workbench.model.cost import cost_unit, estimate_cost
from aifa_workbench.model.site import Partition, Site
from aifa_workbench.model.request import JobRequest

# Why a job ended, from Slurm's final state (squeue --states=all keeps it a few minutes).
ENDINGS = {
    "TIMEOUT": "walltime",
    "DEADLINE": "walltime",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failure",
    "OUT_OF_MEMORY": "out of memory",
    "PREEMPTED": "preempted",
    "FAILED": "error",
    "CANCELLED": "cancelled on the site",
    "COMPLETED": "shut down",
}
WHY = {
    "stopped": "You stopped it from the hub (or an administrator did).",
    "idle": "Nobody used it for a while, so the workbench stopped it to free the GPUs for others. "
    "Your files are kept in your home; start a new session to go on.",
    "course_ended": "Your course ended (its time window passed, or your trainer ended it), so the workbench "
    "stopped it. A guest account's files are deleted with it; in your own account they are kept.",
    "tunnel_taken": "Its connection to the workbench dropped, and meanwhile another program on the workbench's "
    "host took the place meant for it, so the workbench stopped your session rather than send "
    "your traffic there. Your files are kept in your home; start a new session to go on.",
    "cancelled": "You cancelled the request before it started.",
    "start failed": "JupyterLab could not be started; the waiting page said why.",
    "start timeout": "It did not start within the time the hub waits; the cluster may be busy. "
    "Try again later, or choose another partition.",
    "walltime": "Its time ran out: the hours asked for were used up.",
    "node failure": "The node it ran on failed; Slurm ended the job.",
    "out of memory": "It ran out of memory; ask for more memory next time.",
    "preempted": "The site preempted it for a job with a higher priority.",
    "error": "JupyterLab stopped with an error; the job's log is in your home.",
    "cancelled on the site": "It was cancelled on the site (scancel).",
    "shut down": "JupyterLab was shut down (File › Shut Down).",
    "gone": "Slurm no longer knows the job (it ended while nobody looked).",
}
WALLTIME_SLACK_SECONDS = 600  # the walltime guard shuts JupyterLab down minutes before the limit


def site_time_to_epoch(text: str, zone: str | None) -> float | None:
    """Slurm's `2026-12-03T10:42:00`, in the site's zone (None: this host's) -> epoch seconds."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(zone)) if zone else moment.astimezone()
    return moment.timestamp()


def expected_start(info, zone: str | None, reservation_start: float | None = None) -> float | None:
    """When Slurm expects a waiting job to start (epoch): its own estimate, or for a job waiting
    for its reservation (Slurm estimates none) the reservation's start."""
    if info.start:
        return site_time_to_epoch(info.start, zone)
    return reservation_start if info.reason == "Reservation" else None


def duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def resources_text(site: Site, request: JobRequest) -> str:
    part = site.partitions[request.partition]
    if part.whole_node:
        return (
            f"1 whole node ({_plural(part.gpus_per_node, site.gpu_label)}, {part.cores_per_node} cores, "
            f"{part.memory_gb_per_node} GB)"
            if part.gpus_per_node
            else f"1 whole node ({part.cores_per_node} cores, {part.memory_gb_per_node} GB)"
        )
    gpus = f"{_plural(request.gpus, site.gpu_label)} ({part.gpu_model}), " if request.gpus else ""
    return f"{gpus}{_plural(request.cpus, 'core')}, {request.memory_gb} GB"


def cost_text(part: Partition, request: JobRequest, hours: float) -> str:
    cost = estimate_cost(part, request.gpus, request.cpus, request.memory_gb, hours)
    return f"{cost:.2f} {cost_unit(part)}"


def state_of(info, ready: bool, pending: str | None) -> str:
    """queued / starting / running / stopping, as the card names it."""
    if pending == "stop":
        return "stopping"
    if ready:
        return "running"
    if info is not None and info.running:
        return "starting"
    return "queued"


def live_card(
    site: Site,
    request: JobRequest,
    job_id: str,
    info,
    now: float,
    *,
    ready: bool,
    pending: str | None,
    started_at: float | None,
    reservation_start: float | None = None,
) -> dict:
    """What a live session's card shows; `info` is the queue's last word on the job (or None)."""
    part = site.partitions[request.partition]
    state = state_of(info, ready, pending) if job_id else "submitting"
    card = {
        "state": state,
        "site": site.title,
        "site_name": site.name,
        "partition": request.partition,
        "partition_title": part.title,
        "resources": resources_text(site, request),
        "hours": request.hours,
        "account": request.account,
        "reservation": request.reservation or "",
        "job_id": job_id,
        "node": info.node if info is not None and info.running else "",
        "cost_planned": cost_text(part, request, request.hours),
        "cost_so_far": cost_text(part, request, 0),
        "seconds_left": None,
        "ends_at": None,
        "expected_start": None,
        "reason": "",
    }
    if info is not None and info.running:
        # from when it started where the hub knows it (Slurm's time left is the last poll's)
        left = started_at + request.hours * 3600 - now if started_at else info.time_left
        if left is not None:
            used = max(0.0, request.hours * 3600 - left)
            card.update(
                seconds_left=int(left), ends_at=int(now + left), cost_so_far=cost_text(part, request, used / 3600)
            )
    elif info is not None and info.waiting:
        card["reason"] = info.reason  # Slurm's code; the caller puts it in words
        card["expected_start"] = expected_start(info, site.timezone, reservation_start)
    return card


def ending_of(final_state: str, ran_seconds: float, limit_seconds: float) -> str:
    """The key of WHY for a job Slurm ended on its own (not stopped from the hub)."""
    ending = ENDINGS.get(final_state.split()[0] if final_state else "", "gone")
    if ending == "shut down" and ran_seconds >= limit_seconds - WALLTIME_SLACK_SECONDS:
        return "walltime"  # the guard's own shutdown just before the limit
    return ending


def ended_summary(
    site: Site, request: JobRequest, job_id: str, ending: str, started_at: float | None, ended_at: float
) -> dict:
    part = site.partitions[request.partition]
    # never more than the walltime (the hub may learn of the end late)
    ran = min(max(0.0, ended_at - started_at), request.hours * 3600) if started_at else 0.0
    if ending == "stopped" and not started_at:
        ending = "cancelled"
    return {
        "job_id": job_id,
        "site": site.title,
        "partition": request.partition,
        "resources": resources_text(site, request),
        "account": request.account,
        "ending": ending,
        "why": WHY[ending],
        "ran": duration_text(ran),
        "ended_at": int(ended_at),
        "cost": cost_text(part, request, ran / 3600),
    }
