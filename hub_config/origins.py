"""Each user's server on an origin of its own: <user>.<user_domain>.

JupyterHub puts user servers on subdomains of the hub's host (`subdomain_host`). This hook
lets them live under another domain (`user_domain`), e.g. the hub on workbench.example.be and
servers on <user>.users.example-usercontent.be, so that no user's page shares even a site
(registrable domain) with the hub; by default user_domain is the hub's own host name.
"""
from __future__ import annotations

from jupyterhub.utils import subdomain_hook_idna


def user_host_hook(user_domain: str):
    """A JupyterHub subdomain_hook placing servers (and services) under `user_domain`."""

    def hook(name: str, domain: str, kind: str) -> str:
        return subdomain_hook_idna(name, user_domain, kind)

    return hook
