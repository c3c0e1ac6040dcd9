"""Reverse reach: the job dials out to the hub's tunnel gateway and listens there, on a port
the hub granted it (sites.gateway), which only the gateway's account may hold."""

from __future__ import annotations

import asyncio
import pwd
import time

from aifa_workbench.sites import gateway, socket_owner

from ..errors import SpawnError
from .base import Reach


class ReverseReach(Reach):
    mode = "reverse"
    listen_ip = "127.0.0.1"  # on the node, only the job's own tunnel reaches it
    tunnel_in_job = True

    def __init__(self, site, job, settings: dict, open_seconds: float):
        super().__init__(site, job)
        self.settings = settings  # the hub's tunnel gateway (the spawner's tunnel_gateway)
        self.open_seconds = open_seconds
        self.grant: gateway.Grant | None = None  # the gateway port of the current job

    def job_env(self) -> dict[str, str]:
        """A gateway port for the job, and its credential, as the job's AIFA_TUNNEL_* variables."""
        settings, site, job = self.settings, self.site, self.job
        try:
            self.grant = gateway.grant_port(settings["grants_dir"], tuple(settings["ports"]))
            valid_seconds = int(job.job_request.hours * 3600) + job.start_timeout + 600
            credential = gateway.job_credential(settings["ca_key_file"], self.grant, valid_seconds)
            gateway.mark_expiry(settings["grants_dir"], self.grant, time.time() + valid_seconds)
            known_host = gateway.known_hosts_line(site.reach.gateway, settings["port"], settings["host_key_file"])
        except (gateway.NoFreePort, OSError, KeyError, ValueError) as e:
            self.release()
            job.log.error("No tunnel for %s on %s: %s", job.user.name, site.name, e)
            raise SpawnError(
                f"Servers on {site.title} cannot be reached right now: the workbench's tunnel "
                "gateway has no room or is not set up. Try again later, or choose another site; "
                "if it persists, tell your workbench administrator."
            ) from None
        return {
            "AIFA_TUNNEL_KEY": credential.private_key,
            "AIFA_TUNNEL_CERT": credential.certificate,
            "AIFA_TUNNEL_KNOWN_HOSTS": known_host,
            "AIFA_TUNNEL_PORT": str(self.grant.port),
            "AIFA_TUNNEL_GATEWAY": f"{settings['user']}@{site.reach.gateway}",
            "AIFA_TUNNEL_GATEWAY_PORT": str(settings["port"]),
        }

    def release(self) -> None:
        if self.grant is not None and self.settings.get("grants_dir"):
            gateway.revoke(self.settings["grants_dir"], self.grant)
        self.grant = None

    async def target(self, node: str, port: int) -> tuple[str, int]:
        port = self.grant.port
        await self._wait_for_tunnel(port)
        return "127.0.0.1", port

    async def _wait_for_tunnel(self, port: int) -> None:
        """Until the job's tunnel listens on the gateway (it opens once JupyterLab listens). Only
        the kernel's word counts: nothing connects to the port before the gateway's account is
        seen holding it (anyone on this host may bind a port of the range first)."""
        deadline = time.monotonic() + self.open_seconds
        while True:
            if await asyncio.to_thread(socket_owner.owners, "127.0.0.1", port):  # /proc: ~10 ms
                return  # whose it is, prove_listener says
            info = self.job.monitor.info(self.job.job_id)
            if info is not None and not info.active:
                raise await self.job._died_early(info)
            if time.monotonic() > deadline:
                raise SpawnError(
                    f"Your server on {self.site.title} started but its tunnel to "
                    f"the workbench did not open within {self.open_seconds:.0f} seconds, so "
                    "you could not reach it. Start it again; if it keeps happening, tell your "
                    "workbench administrator (the job's output says why)."
                )
            await asyncio.sleep(0.2)

    def listener_uid(self) -> int | None:
        try:
            return pwd.getpwnam(self.settings["user"]).pw_uid
        except (KeyError, TypeError):
            return -1  # an account that does not exist here owns nothing

    def save(self, state: dict) -> None:
        if self.grant is not None:
            state["tunnel"] = self.grant.as_state()

    def restore(self, state: dict) -> None:
        self.grant = gateway.Grant.from_state(state.get("tunnel"))
