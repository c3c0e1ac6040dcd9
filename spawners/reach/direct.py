"""Direct reach: the hub routes to the compute node's address, as the site names it."""

from __future__ import annotations

from aifa_workbench.sites import reach as site_reach
from aifa_workbench.sites.errors import SiteError

from ..errors import SpawnError
from .base import Reach


class DirectReach(Reach):
    mode = "direct"

    async def target(self, node: str, port: int) -> tuple[str, int]:
        try:
            return await site_reach.node_address(self.job.control, self.job.user.name, node), port
        except SiteError as e:
            raise SpawnError(e.sentence) from None
