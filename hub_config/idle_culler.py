"""Idle servers give their GPUs back: jupyterhub-idle-culler as a hub service.

The hub learns a server's activity from the proxy and from the server itself, every
`activity_interval_seconds`; the culler's timeout must be well above that (settings check it), or
a server in use could look idle. A server the culler stops is marked, so that its session card
says it was stopped for being idle and that the files are kept.
"""

from __future__ import annotations

import os
import sys

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.users import UserServerAPIHandler

SERVICE = "idle-culler"
ROUTES = (r"/api/users/([^/]+)/server", r"/api/users/([^/]+)/servers/([^/]*)")


class ServerStopHandler(UserServerAPIHandler):
    """JupyterHub's own handler; a stop the culler asks for is noted on the spawner first."""

    async def delete(self, user_name, server_name=""):
        caller = self.current_user
        if getattr(caller, "kind", None) == "service" and getattr(caller, "name", None) == SERVICE:
            user = self.find_user(user_name)
            spawner = user.spawners.get(server_name) if user is not None else None
            if spawner is not None:
                spawner.stop_reason = "idle"
        return await super().delete(user_name, server_name)


def install_stop_handler() -> None:
    default_handlers[:] = [
        (route, ServerStopHandler if route in ROUTES else handler) for route, handler, *rest in default_handlers
    ]


def command(culler: dict) -> list[str]:
    """The service's command line (no secret in it: the hub gives the service its token in the
    environment)."""
    # tied to the hub's process (this config runs in it): a hub killed outright takes it along
    argv = [
        sys.executable,
        "-m",
        "aifa_workbench.hub_config.tied",
        str(os.getpid()),
        "--",
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={culler['timeout_seconds']}",
        f"--cull-every={culler['every_seconds']}",
        "--concurrency=5",
    ]
    if culler["max_age_seconds"]:
        argv.append(f"--max-age={culler['max_age_seconds']}")
    return argv


def configure_activity(c, culler: dict) -> None:
    """How often the hub reads the proxy's activity, and each server reports its own (the culler
    and courses' own idle timeouts read it)."""
    c.JupyterHub.last_activity_interval = culler["activity_interval_seconds"]
    # jupyterhub-singleuser reads it; a JUPYTERHUB_* variable, so it reaches the job
    c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(culler["activity_interval_seconds"])}


def configure(c, culler: dict) -> None:
    configure_activity(c, culler)
    c.JupyterHub.services.append({"name": SERVICE, "command": command(culler)})
    c.JupyterHub.load_roles.append(
        {
            "name": SERVICE,
            "services": [SERVICE],
            "description": "Stops servers idle for longer than the settings' idle_culler.timeout_seconds",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        }
    )
    install_stop_handler()
