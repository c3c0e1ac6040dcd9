"""Checks the hub makes before it starts, each failing with one sentence."""
from __future__ import annotations

import subprocess


class PreflightError(RuntimeError):
    pass


def check_slurm(slurm_bin: str = "/usr/bin", timeout: float = 20) -> None:
    """Fail unless the Slurm controller answers `scontrol ping` with UP."""
    argv = [f"{slurm_bin}/scontrol", "ping"]
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
