"""Checks the hub makes before it starts, each failing with one sentence."""

from __future__ import annotations

import subprocess

from aifa_workbench.sites import slurm_cli as cli

START_SLURMCTLD = "check that slurmctld is running (`make cluster-status`) and start the hub again."


class PreflightError(RuntimeError):
    pass


def _said(result: subprocess.CompletedProcess) -> str:
    """What a command printed, on one line (for a sentence)."""
    return " ".join((result.stdout + result.stderr).split())


def _run(argv: list[str], timeout: float, fix: str) -> subprocess.CompletedProcess:
    """`argv`'s result; a command that is missing, cannot run or does not answer in time is a
    PreflightError ending with `fix`, what to do. Its exit code is the caller's to judge."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PreflightError(
            f"Slurm is not installed here ({argv[0]} is missing): run `make cluster` or install the Slurm client."
        ) from None
    except OSError as e:
        raise PreflightError(f"{argv[0]} could not run ({e.strerror}): {fix}") from None
    except subprocess.TimeoutExpired:
        command = " ".join([argv[0].rsplit("/", 1)[-1], *argv[1:]])
        raise PreflightError(f"Slurm did not answer `{command}` within {timeout:g} s: {fix}") from None


def check_slurm(slurm_bin: str = "/usr/bin", timeout: float = 20) -> None:
    """Fail unless the Slurm controller answers `scontrol ping` with UP."""
    result = _run(cli.ping_argv(slurm_bin), timeout, START_SLURMCTLD)
    said = _said(result)
    if result.returncode != 0 or " is UP" not in said:
        raise PreflightError(
            f"Slurm is not answering (`scontrol ping` says: {said or 'nothing'}): "
            "start it with `make cluster` and start the hub again."
        )


def check_local_partitions(sites, slurm_bin: str = "/usr/bin", timeout: float = 20) -> None:
    """Fail if a site run on this host's Slurm names a partition Slurm does not have."""
    local = [site for site in sites.values() if site.transport == "local"]
    if not local:
        return
    result = _run(cli.partitions_argv(slurm_bin), timeout, START_SLURMCTLD)
    if result.returncode != 0:
        raise PreflightError(
            f"Slurm could not list its partitions (`sinfo` exit {result.returncode}: "
            f"{_said(result) or 'nothing said'}): {START_SLURMCTLD}"
        )
    known = set(result.stdout.split())
    for site in local:
        missing = sorted(set(site.partitions) - known)
        if missing:
            raise PreflightError(
                f"{site.path}: partitions: Slurm here has no partition "
                f"{', '.join(missing)} (it has {', '.join(sorted(known)) or 'none'}): "
                "fix the site file or the cluster (`make cluster`)."
            )
