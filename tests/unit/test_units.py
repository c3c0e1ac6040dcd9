"""The systemd units the roles install: rendered as Ansible would, and verified by systemd."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
FACTS = {
    "ansible_managed": "Ansible managed",
    "workbench_hub_user": "aifa-hub",
    "workbench_etc": "/etc/aifa-workbench",
    "workbench_state_dir": "/var/lib/aifa-workbench",
    "workbench_venv": "/opt/aifa-workbench/venv",
    "tunnel_gateway_etc": "/etc/aifa-workbench/gateway",
}
UNITS = [
    "workbench_hub/templates/aifa-workbench-tunneld.service.j2",
    "tunnel_gateway/templates/aifa-tunnel-gateway.service.j2",
]


@pytest.mark.parametrize("template", UNITS)
def test_the_unit_is_one_systemd_accepts(template, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = re.sub(r"\{\{ (\w+) \}\}", lambda m: FACTS[m.group(1)], (ROLES / template).read_text())
    unit = tmp_path / Path(template).name.removesuffix(".j2")
    unit.write_text(text)
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [line for line in checked.stderr.splitlines() if unit.name in line or "Unknown" in line]
    assert checked.returncode == 0 and not problems, checked.stderr


def test_the_tunnel_daemon_unit_runs_as_the_hub_user_and_writes_only_its_state():
    text = (ROLES / UNITS[0]).read_text()
    assert "User={{ workbench_hub_user }}" in text and "ProtectSystem=strict" in text
    assert "ReadWritePaths={{ workbench_state_dir }}" in text and "NoNewPrivileges=yes" in text
