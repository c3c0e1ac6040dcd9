"""What every reach strategy does, and what it reads of the spawner it serves."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aifa_workbench.model.request import shown
from aifa_workbench.sites import socket_owner

from ..errors import SpawnError
from ..server_identity import own_server_identity


class Job(Protocol):
    """What a reach strategy reads of its spawner: the current job and its user."""

    user: object  # .name: the hub user
    name: str  # the server's name
    job_id: str
    job_request: object  # model.request.JobRequest
    start_timeout: int
    log: object
    control: object  # sites.control.JobControl of the job's site
    monitor: object  # spawners.queue_monitor.QueueMonitor of the job's site
    _log_name: str  # the server, as the hub's log names it
    server: object  # .base_url: the server's URL prefix
    api_token: str  # the server's token
    command_timeout: float

    def local_username(self) -> str: ...

    async def _died_early(self, info) -> SpawnError: ...


class Reach:
    """How the hub and a job reach each other on one site: where the job listens and calls the
    hub, what it needs for that, where the hub routes to, and what is given back at its end.
    Subclasses replace what their mode does otherwise."""

    mode = ""
    listen_ip = "0.0.0.0"  # where JupyterLab listens on the node
    tunnel_in_job = False  # the batch script opens the job's tunnel (reverse)
    hub_ca_in_job = False  # the job trusts the hub's own CA (forward)

    def __init__(self, site, job: Job):
        self.site, self.job = site, job

    def job_hub_base(self, hub_port: int) -> str | None:
        """Where the job calls the hub (replacing the hub's own address); None: as the hub says."""
        return self.site.reach.hub_base(hub_port) if self.site.reach is not None else None

    async def prepare(self) -> None:
        """Before the job's environment is made."""

    def job_env(self) -> dict[str, str]:
        """Secrets the job needs for its reach (in its private env file)."""
        return {}

    async def target(self, node: str, port: int) -> tuple[str, int]:
        """The address the hub routes to, once the job runs on `node` and reported `port`."""
        raise NotImplementedError(f"{type(self).__name__} names no address")

    def listener_uid(self) -> int | None:
        """Whose socket the server's address must be, when it is on this host; None where the
        address is another host's."""
        return None

    def release(self) -> None:
        """Give back what this job held of the hub's (the server ended, or never started)."""

    def end_job(self) -> None:
        """The current job is over (its id still set)."""

    def save(self, state: dict) -> None:
        """Add what must outlive a hub restart to the spawner's state."""

    def restore(self, state: dict) -> None:
        """Take it back from a saved state."""

    async def prove_listener(self, ip: str, port: int) -> None:
        """On this host, the kernel says whose socket takes a connection to ip:port: it must be
        the expected account's alone, or the hub sends nothing there (not even its check)."""
        expected = self.listener_uid()
        if expected is None or not socket_owner.is_local_address(ip):
            return
        owners = await asyncio.to_thread(socket_owner.owners, ip, port)
        if owners == {expected}:
            return
        job = self.job
        job.log.error(
            "Job %s of %s: %s:%s is held by uid %s, not %s: not sending it the server's token",
            job.job_id,
            job.user.name,
            ip,
            port,
            sorted(owners) or "nobody",
            expected,
        )
        self.release()
        raise SpawnError(
            f"Your server on {self.site.title} could not be connected safely: "
            "another program on the workbench's host holds the address meant for it, so the "
            "workbench sent it nothing and stopped your job. Start your server again; if it "
            "keeps happening, tell your workbench administrator."
        )

    async def check_own_server(self, ip: str, port: int) -> None:
        """Before the route is added: the server at the reported address must be this user's,
        this very server (a job may report any port of its node, another user's among them)."""
        job = self.job
        url = f"http://{ip}:{port}{job.server.base_url}api/me"
        identity = await own_server_identity(url, job.api_token, timeout=min(job.command_timeout, 10))
        if identity != job.user.name:
            job.log.warning(
                "Job %s of %s reported %s:%s, where %s answers: not routing it",
                job.job_id,
                job.user.name,
                ip,
                port,
                shown(identity) if identity else "no server of theirs",
            )
            raise SpawnError(
                "Your job reported an address where your own server does not answer, so the "
                "workbench did not connect you to it. Start your server again; if it keeps "
                "happening, tell your workbench administrator."
            )
