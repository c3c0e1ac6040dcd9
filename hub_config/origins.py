"""Each user's server on an origin of its own: <user>.<user_domain>.

JupyterHub puts user servers on subdomains of the hub's host (`subdomain_host`). This hook
lets them live under another domain (`user_domain`), e.g. the hub on workbench.example.be and
servers on <user>.users.example-usercontent.be, so that no user's page shares even a site
(registrable domain) with the hub; by default user_domain is the hub's own host name.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from jupyterhub.utils import subdomain_hook_idna


def user_host_hook(user_domain: str):
    """A JupyterHub subdomain_hook placing servers (and services) under `user_domain`."""

    def hook(name: str, domain: str, kind: str) -> str:
        return subdomain_hook_idna(name, user_domain, kind)

    return hook


def _netloc(host: str, scheme: str) -> str:
    host = host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return host[: -len(default)] if default and host.endswith(default) else host


def hub_page_allowed(host: str, path: str, public_host: str, hub_prefix: str, internal_hosts) -> bool:
    """Whether a request for the hub's own pages and API (under hub_prefix) may be answered on
    `host`. The proxy sends every host's unrouted requests to the hub, so without this the hub's
    login page would also answer on <user>.<domain>, and a user's page could read it there."""
    if not path.startswith(hub_prefix):
        return True  # JupyterHub only redirects these to the hub's own host
    public = urlsplit(public_host)
    netloc = _netloc(host, public.scheme)
    if netloc in {_netloc(public.netloc, public.scheme), *internal_hosts}:
        return True
    name, _, port = netloc.rpartition(":")  # "name:*": a forward-reach login node, any port
    return bool(name) and port.isdigit() and f"{name}:*" in internal_hosts


def confine_hub_pages(public_host: str, hub_prefix: str, internal_hosts) -> None:
    """Make every hub handler answer its pages on the hub's own host only: a GET elsewhere is
    sent to the same path on the hub's host, anything else refused. (JupyterHub has no setting
    for this; its handlers all pass BaseHandler.prepare.)"""
    from jupyterhub.handlers.base import BaseHandler
    from tornado import web

    original = getattr(BaseHandler.prepare, "__wrapped__", BaseHandler.prepare)

    @functools.wraps(original)
    async def prepare(self):
        request = self.request
        if not hub_page_allowed(request.host, request.path, public_host, hub_prefix, internal_hosts):
            if request.method in ("GET", "HEAD"):
                self.redirect(public_host.rstrip("/") + request.uri)
                return
            raise web.HTTPError(403, "The hub answers on its own address only.")
        return await original(self)

    BaseHandler.prepare = prepare
