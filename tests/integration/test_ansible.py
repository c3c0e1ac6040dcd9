"""The roles are idempotent: applied again to a machine they set up, they change nothing."""

import re
import subprocess
import time

import pytest

from .hubs import ROOT

pytestmark = [pytest.mark.ansible, pytest.mark.slurm]
ADMIN_ACCOUNT = "aifa"  # ansible/roles/slurm/defaults/main.yml slurm_admin_account


def free_gpus() -> int:
    line = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "standard-g", "-O", "Gres:60,GresUsed:80"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    total, used = (int(re.sub(r"\(.*", "", field).rsplit(":", 1)[1]) for field in line[:2])
    return total - used


def test_second_run_changes_nothing_even_while_users_jobs_hold_the_gpus(cluster):
    """A demo stopped while servers ran is set up again with their jobs holding GPUs: the roles'
    check of the cluster does not depend on which GPUs are free."""
    free = free_gpus()
    holder = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--account={ADMIN_ACCOUNT}",
            "-p",
            "standard-g",
            f"--gpus-per-node={max(free - 1, 1)}",
            "-t",
            "15",
            "-o",
            "/dev/null",
            "-J",
            "aifa-test-gpu-holder",
            "--wrap",
            "sleep 900",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while free_gpus() >= 2:  # all but one of the free GPUs held (or all, if one was free)
            assert time.monotonic() < deadline, "the job holding the GPUs did not start"
            time.sleep(0.5)
        result = subprocess.run(
            ["ansible-playbook", "-v", "site.yml"],
            cwd=ROOT / "ansible",  # -v: the tasks' output
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        subprocess.run(["scancel", holder])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Two GPUs are not free now" in result.stdout
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", result.stdout)
    blocks = re.split(r"\n(?=TASK \[)", result.stdout)
    changed_tasks = [b.split("]")[0].removeprefix("TASK [") for b in blocks if "\nchanged:" in b]
    assert recap and recap.group(1) == "0", f"changed tasks: {changed_tasks}"
