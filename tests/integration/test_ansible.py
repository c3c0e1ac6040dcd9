"""The roles are idempotent: applied again to a machine they set up, they change nothing."""
import re
import subprocess

import pytest

from .hubs import ROOT

pytestmark = [pytest.mark.ansible, pytest.mark.slurm]


def test_second_run_changes_nothing(cluster):
    result = subprocess.run(["ansible-playbook", "site.yml"], cwd=ROOT / "ansible",
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", result.stdout)
    blocks = re.split(r"\n(?=TASK \[)", result.stdout)
    changed_tasks = [b.split("]")[0].removeprefix("TASK [") for b in blocks if "\nchanged:" in b]
    assert recap and recap.group(1) == "0", f"changed tasks: {changed_tasks}"
