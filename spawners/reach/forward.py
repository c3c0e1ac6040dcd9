"""Forward reach: the hub's tunnel daemon (sites.tunneld) forwards to the node through the
user's login-node connection, and holds the forward on the login node by which jobs call the hub."""

from __future__ import annotations

import os

from aifa_workbench.sites.tunnel_client import TunnelDaemonError, ask as ask_tunnel_daemon

from aifa_workbench.sites.background import in_background
from ..errors import SpawnError
from .base import Reach


def forward_id(user: str, server_name: str, job_id: str) -> str:
    """One per job: closing an ended job's forward never closes the next job's."""
    return f"{user}/{server_name}.{job_id}"


class ForwardReach(Reach):
    mode = "forward"
    hub_ca_in_job = True

    def __init__(self, site, job, daemon_socket: str):
        super().__init__(site, job)
        self.daemon_socket = daemon_socket
        self.hub_base: str | None = None  # where the job calls the hub (the login node's forward)
        self.hub_ca = ""  # the CA the job trusts for the hub there

    def job_hub_base(self, hub_port: int) -> str | None:
        return self.hub_base

    async def prepare(self) -> None:
        answer = await self._ask(
            "the hub API forward", {"op": "hub_api", "site": self.site.name, "user": self.job.user.name}
        )
        ca = answer.get("ca")
        if not (isinstance(ca, str) and ca.startswith("-----BEGIN CERTIFICATE-----") and len(ca) < 8192):
            raise self._error("the hub API forward", TunnelDaemonError("no CA for the hub API's TLS"))
        self.hub_ca = ca
        self.hub_base = f"https://{answer['host']}:{int(answer['port'])}"

    def job_env(self) -> dict[str, str]:
        return {"AIFA_WORKBENCH_HUB_CA_PEM": self.hub_ca}

    async def target(self, node: str, port: int) -> tuple[str, int]:
        job = self.job
        request = {
            "op": "open",
            "id": forward_id(job.user.name, job.name, job.job_id),
            "site": self.site.name,
            "user": job.user.name,
            "host": node,
            "port": port,
        }
        return "127.0.0.1", int((await self._ask("a forward", request))["local_port"])

    def listener_uid(self) -> int | None:
        return os.geteuid()  # the tunnel daemon's, which is this hub's

    def end_job(self) -> None:
        ident = forward_id(self.job.user.name, self.job.name, self.job.job_id)
        in_background(self._close(ident), f"Closing the forward of {self.job._log_name}", self.job.log)

    async def _close(self, ident: str) -> None:
        try:
            await ask_tunnel_daemon(self.daemon_socket, {"op": "close", "id": ident})
        except TunnelDaemonError as e:
            self.job.log.warning("Forward %s not closed: %s", ident, e.detail)

    async def _ask(self, action: str, request: dict) -> dict:
        try:
            return await ask_tunnel_daemon(self.daemon_socket, request)
        except TunnelDaemonError as e:
            raise self._error(action, e) from None

    def _error(self, action: str, error: TunnelDaemonError) -> SpawnError:
        title, job = self.site.title, self.job
        job.log.error("Tunnel daemon, %s for %s on %s: %s", action, job.user.name, self.site.name, error.detail)
        return SpawnError(
            f"Servers on {title} cannot be reached right now: the workbench's tunnel to "
            f"{title} is not working, so your server was not started (or was stopped). Try again "
            "in a few minutes, or choose another site; if it persists, tell your workbench "
            "administrator."
        )
