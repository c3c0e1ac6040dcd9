"""The spawner's settings, from the hub's settings file: one mapping of WorkbenchSlurmSpawner's
traits, which jupyterhub_config.py sets as c.WorkbenchSlurmSpawner.* and `aifa-workbench
render-script` gives the spawner it builds, so that the script it prints is the one the hub submits."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from aifa_workbench.model.settings import Settings

KEYS_PAGE_PATH = "/site-keys"  # where hub_config.site_keys.page serves each user's keys, under /hub


def spawner_traits(settings: Settings) -> dict:
    """{trait name: value} of WorkbenchSlurmSpawner, as the hub configures it."""
    return {
        "venv_dir": settings.venv_dir,
        "slurm_bin": settings.slurm_bin,
        "catalogue_dir": settings.catalogue_dir or "",
        "enabled_sites": list(settings.sites),
        "default_site": settings.default_site,
        "site_users": settings.site_users or {},
        "hub_port": settings.hub_port,
        "keys_page_url": settings.public_host + urlsplit(settings.bind_url).path + "hub" + KEYS_PAGE_PATH,
        "walltime_warnings_minutes": list(settings.walltime_warnings_minutes),
        "hub_id": settings.hub_id,
        "support_contact": settings.support_contact,
        "tunnel_daemon_socket": str(settings.state_dir / "tunneld.sock"),
        "tunnel_gateway": {
            **dataclasses.asdict(settings.tunnel_gateway),
            "ca_key_file": str(settings.secrets_dir / "tunnel-ca"),
        },
        "personal_named_servers": settings.named_servers_per_user,
    }
