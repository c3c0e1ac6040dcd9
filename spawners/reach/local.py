"""The local cluster: the hub routes to the node's address, which the job's user must hold."""

from __future__ import annotations

import asyncio
import pwd
import socket

from .base import Reach


class LocalReach(Reach):
    mode = "local"

    async def target(self, node: str, port: int) -> tuple[str, int]:
        """The node as one address, IPv4 first (the one checked is the one routed). A name that
        resolves to nothing stays a name: nothing can connect to it, token or not."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(node, None, type=socket.SOCK_STREAM)
        except OSError:
            return node, port
        found.sort(key=lambda entry: entry[0] != socket.AF_INET)
        return (found[0][4][0] if found else node), port

    def listener_uid(self) -> int | None:
        try:
            return pwd.getpwnam(self.job.local_username()).pw_uid
        except (KeyError, TypeError):
            return -1  # an account that does not exist here owns nothing
