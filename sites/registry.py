"""One job control per enabled site, made once per hub process."""
from __future__ import annotations

from .commands import LocalRunner
from .control import JobControl

_CONTROLS: dict[tuple, JobControl] = {}


def site_control(site, slurm_bin: str = "/usr/bin", timeout: float = 30.0) -> JobControl:
    """The job control of catalogue site `site` (a hub_config.catalogue.Site)."""
    key = (site.name, site.transport, slurm_bin)
    control = _CONTROLS.get(key)
    if control is None:
        if site.transport != "local":
            raise NotImplementedError(f"no job control for transport {site.transport!r} yet")
        control = JobControl(site.name, site.title, LocalRunner(), slurm_bin, timeout, shared_queries=True)
        _CONTROLS[key] = control
    return control
