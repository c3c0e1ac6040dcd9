"""Checks the hub makes before it starts, each failing with one sentence."""
from __future__ import annotations

import subprocess

from aifa_workbench.sites import slurm_cli as cli


class PreflightError(RuntimeError):
    pass


def check_slurm(slurm_bin: str = "/usr/bin", timeout: float = 20) -> None:
    """Fail unless the Slurm controller answers `scontrol ping` with UP."""
    argv = cli.ping_argv(slurm_bin)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PreflightError(f"Slurm is not installed here ({argv[0]} is missing): "
                             "run `make cluster` or install the Slurm client.") from None
    except subprocess.TimeoutExpired:
        raise PreflightError(f"Slurm did not answer `scontrol ping` within {timeout:g} s: "
                             "check that slurmctld is running (`make cluster-status`).") from None
    said = " ".join((result.stdout + result.stderr).split())
    if result.returncode != 0 or " is UP" not in said:
        raise PreflightError(f"Slurm is not answering (`scontrol ping` says: {said or 'nothing'}): "
                             "start it with `make cluster` and start the hub again.")


def check_local_partitions(sites, slurm_bin: str = "/usr/bin", timeout: float = 20) -> None:
    """Fail if a site run on this host's Slurm names a partition Slurm does not have."""
    local = [site for site in sites.values() if site.transport == "local"]
    if not local:
        return
    result = subprocess.run(cli.partitions_argv(slurm_bin), capture_output=True,
                            text=True, timeout=timeout)
    known = set(result.stdout.split())
    for site in local:
        missing = sorted(set(site.partitions) - known)
        if missing:
            raise PreflightError(f"{site.path}: partitions: Slurm here has no partition "
                                 f"{', '.join(missing)} (it has {', '.join(sorted(known)) or 'none'}): "
                                 "fix the site file or the cluster (`make cluster`).")
