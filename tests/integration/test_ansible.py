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
    changed_tasks = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)*?changed:", result.stdout)
    assert recap and recap.group(1) == "0", f"changed tasks: {changed_tasks}"
