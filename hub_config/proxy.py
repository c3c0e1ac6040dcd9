"""The proxy runs on its own, not as the hub's child: a hub restart (or upgrade) then leaves every
route in place, and users' servers stay reachable while the hub is away."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

from aifa_workbench.model.settings import Settings


def proxy_argv(settings: Settings, chp: str = "configurable-http-proxy") -> list[str]:
    public = urlsplit(settings.bind_url)
    hub = f"http://127.0.0.1:{settings.hub_port}"
    argv = [
        chp,
        "--ip",
        public.hostname,
        "--port",
        str(public.port or (443 if settings.https else 80)),
        "--api-ip",
        "127.0.0.1",
        "--api-port",
        str(settings.proxy_api_port),
        "--default-target",
        hub,
        "--error-target",
        f"{hub}/hub/error",
        "--log-level",
        "warn",
        # each user's server on a host of its own (<user>.<user_domain>): routes carry the host
        "--host-routing",
    ]
    if settings.https:
        argv += ["--ssl-cert", settings.tls_cert_file, "--ssl-key", settings.tls_key_file]
    return argv


def exec_proxy(settings: Settings) -> None:
    """Replace this process with configurable-http-proxy (token from secrets_dir, not argv)."""
    chp = shutil.which("configurable-http-proxy", path="/usr/local/bin:/usr/bin:/bin")
    if chp is None:
        raise FileNotFoundError("configurable-http-proxy is not installed (make install)")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "CONFIGPROXY_AUTH_TOKEN": settings.secret("proxy-auth-token")}
    os.execve(chp, proxy_argv(settings, chp), env)
