"""How the hub and a job reach each other, one strategy per mode of the site catalogue's `reach`
(local cluster, direct, reverse, forward): where the job listens and calls the hub, where the hub
routes to, and the tunnels each mode opens and gives back."""

from __future__ import annotations

from .base import Job, Reach
from .direct import DirectReach
from .forward import ForwardReach, forward_id
from .local import LocalReach
from .reverse import ReverseReach

__all__ = ["DirectReach", "ForwardReach", "Job", "LocalReach", "Reach", "ReverseReach", "forward_id", "reach_for"]


def reach_for(site, job: Job, *, tunnel_gateway: dict, tunnel_open_seconds: float, tunnel_daemon_socket: str) -> Reach:
    """The strategy of `site`: its catalogue's reach mode, else the local cluster's (transport
    local) or direct (a remote site the catalogue says nothing of: refused before a spawn)."""
    mode = site.reach.mode if site.reach is not None else None
    if mode == "reverse":
        return ReverseReach(site, job, tunnel_gateway, tunnel_open_seconds)
    if mode == "forward":
        return ForwardReach(site, job, tunnel_daemon_socket)
    if site.transport == "local":
        return LocalReach(site, job)
    return DirectReach(site, job)
