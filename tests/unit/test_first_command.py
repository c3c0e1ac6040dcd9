"""The README's first command works on a Debian 12 that has no `make` yet: it installs it."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="the command runs as root")
def test_without_make_the_first_command_installs_it_then_runs_the_target(tmp_path):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id"):  # what a minimal Debian has; no make
        (bin_dir / tool).symlink_to(
            subprocess.run(
                ["bash", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    (tmp_path / "make").write_text(f'#!{bin_dir}/bash\necho "make $*" >> {calls}\n')  # what apt-get brings
    (bin_dir / "apt-get").write_text(
        f'#!{bin_dir}/bash\necho "apt-get $*" >> {calls}\n'
        f'[ "$1" = install ] && /bin/cp {tmp_path}/make {bin_dir}/make && '
        f'/bin/chmod +x {bin_dir}/make\nexit 0\n'
    )
    (bin_dir / "apt-get").chmod(0o755)
    done = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "workbench.sh"), "test"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "apt-get update -q",
        "apt-get install -y -q --no-install-recommends make",
        "make test",
    ]


def test_ci_runs_the_readmes_test_command():
    readme_commands = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()[2:4]]
    assert readme_commands == ["./workbench.sh demo", "./workbench.sh test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("./workbench.sh test")
    assert os.access(ROOT / "workbench.sh", os.X_OK)


def test_sshd_configs_are_validated_only_once_sshds_own_directory_exists():
    """On a machine without systemd no sshd has started yet, so /run/sshd (which `sshd -t`
    insists on) does not exist: a role must make it before it validates an sshd_config."""
    import yaml

    for tasks_file in sorted((ROOT / "ansible" / "roles").glob("*/tasks/*.yml")):
        made = False
        for task in yaml.safe_load(tasks_file.read_text()) or []:
            module = task.get("ansible.builtin.file") or task.get("file") or {}
            if isinstance(module, dict) and module.get("path") == "/run/sshd" and module.get("state") == "directory":
                made = True
            checks = [m.get("validate", "") for m in task.values() if isinstance(m, dict)]
            if any("sshd -t" in check for check in checks):
                assert made, (
                    f"{tasks_file.relative_to(ROOT)}: '{task.get('name')}' runs sshd -t before /run/sshd exists"
                )


def test_the_demos_identity_provider_is_one_that_runs_on_debian_12s_nodejs():
    """A fresh Debian 12 has Node.js 18 (its own nodejs package). oidc-provider 9 calls URL.parse and
    crypto.hash (Node.js >= 20.18) and stopped the demo's first start there (fresh-debian.sh);
    8.8.1, the last 8.x, runs on 18. A newer one needs a newer Node.js installed by the roles first."""
    import json

    files = ROOT / "ansible" / "roles" / "oidc_provider" / "files"
    wanted = json.loads((files / "package.json").read_text())["dependencies"]["oidc-provider"]
    locked = json.loads((files / "package-lock.json").read_text())["packages"]["node_modules/oidc-provider"]
    assert wanted == locked["version"] == "8.8.1"
    assert "nodejs" in (ROOT / "ansible" / "roles" / "workbench_hub" / "tasks" / "main.yml").read_text()
