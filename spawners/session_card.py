"""The session card of the hub's pages (pure): the live card of a server's job, when it started
running (billed from there) and, once it is over, what ended, why and what it cost."""

from __future__ import annotations

from aifa_workbench.model import session as session_mod
from aifa_workbench.sites.slurm_cli import JobInfo, describe_reason

# The hub's own reasons to stop a server: the idle culler (hub_config/idle_culler), a course's end
# (hub_config/courses), an address another account took (spawners/tunnel_reconcile).
HUB_STOP_REASONS = ("idle", "course_ended", "tunnel_taken")

# Endings the hub names itself; any other final state is Slurm's, read by model.session.
HUB_ENDINGS = ("stopped", "start timeout", "start failed", *HUB_STOP_REASONS)


def catalogue_site(sites, request):
    """The site of `request` while the catalogue still has it and its partition."""
    site = sites.get(request.site) if request is not None else None
    return site if site is not None and request.partition in site.partitions else None


def started_at(known: float | None, info: JobInfo | None, request, now: float) -> float | None:
    """When the job started running (epoch): `known` once noted, else from its time left."""
    if known is None and info is not None and info.running and info.time_left is not None and request is not None:
        return now - max(0, request.hours * 3600 - info.time_left)
    return known


def stop_ending(*, start_failed: bool, late: bool, started: bool, stop_reason: str | None) -> str:
    """Why the hub stops a job: its start failed or took too long, the hub's own reason for a
    running server, or the user's stop."""
    if start_failed:
        return "start failed"
    if late and not started:
        return "start timeout"
    return stop_reason if stop_reason in HUB_STOP_REASONS and started else "stopped"


def ended(site, request, job_id: str, final_state: str, started: float | None, now: float) -> dict:
    """What ended, why and what it cost (session.ended_summary)."""
    if final_state in HUB_ENDINGS:
        ending = final_state
    else:
        ran = now - started if started else 0
        ending = session_mod.ending_of(final_state, ran, request.hours * 3600)
    return session_mod.ended_summary(site, request, job_id, ending, started, now)


def live(
    site,
    request,
    job_id: str,
    info: JobInfo | None,
    now: float,
    *,
    ready: bool,
    pending: str | None,
    started: float | None,
    reservation_start: float | None,
) -> dict:
    """The live card, Slurm's reason for a waiting job in words."""
    card = session_mod.live_card(
        site,
        request,
        job_id,
        info,
        now,
        ready=ready,
        pending=pending,
        started_at=started,
        reservation_start=reservation_start,
    )
    card["reason"] = describe_reason(card["reason"]) if card["reason"] else ""
    return card
