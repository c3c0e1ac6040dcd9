"""Where the hub finds a job's server on a remote site, by the catalogue's reach mode.

direct: the compute node is routable from the hub; its address is what the site's own name
service says about the node Slurm named (asked on the login node, as the user: the hub host
does not know the site's host names). reverse: sites.gateway; forward: sites.tunneld."""

from __future__ import annotations

import ipaddress
import re

from .errors import SiteUnreachable


def resolve_argv(node: str) -> list[str]:
    return ["getent", "ahostsv4", node]


def first_ipv4(getent_output: str) -> str | None:
    for line in getent_output.splitlines():
        parts = line.split()
        if parts:
            try:
                return str(ipaddress.IPv4Address(parts[0]))
            except ValueError:
                continue
    return None


async def node_address(control, user: str, node: str) -> str:
    """The IPv4 address of `node` as the site resolves it."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}", node):
        raise SiteUnreachable(control.site_title, f"Slurm named the node {node[:40]!r}")
    result = await control.run_on_site(resolve_argv(node), user, 15, f"resolving the node {node}")
    address = first_ipv4(result.stdout) if result.ok else None
    if address is None:
        raise SiteUnreachable(control.site_title, f"the site does not resolve its node {node!r}")
    return address
