import os
import signal
import subprocess
from pathlib import Path

import pytest

from . import hubs
from .sim_sites import SITE_NODES, site_argv, site_is_up
from .slurm_helpers import cancel_left_test_jobs, wait_for_job_end

ROOT = hubs.ROOT


def slurm_up() -> bool:
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return r.returncode == 0 and " is UP" in r.stdout


@pytest.fixture(scope="session")
def cluster():
    """The local Slurm cluster: reuse a running one, otherwise bring it up with the Ansible roles."""
    if os.geteuid() != 0:
        pytest.skip("integration tests act as the hub's service user and need root")
    if not slurm_up():
        subprocess.run(["ansible-playbook", "cluster.yml"], cwd=ROOT / "ansible", check=True)
    assert slurm_up(), "the local Slurm cluster did not come up"
    return True


def stop_test_hubs_left_running() -> None:
    """A killed test run leaves its hubs, proxies and tunnel daemons running (each in a session of
    its own, in its hub's folder under TEST_HUBS_DIR), orphans: end them. Those of a run or a
    benchmark still going have it as their parent, and are left alone."""
    for proc in Path("/proc").iterdir():
        try:
            if not (proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(hubs.TEST_HUBS_DIR)):
                continue
            parent = (proc / "stat").read_text().rpartition(")")[2].split()[1]
            if b"python" not in Path(f"/proc/{parent}/cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGTERM)
        except (OSError, IndexError):
            continue


@pytest.fixture(scope="session", autouse=True)
def no_jobs_left_by_killed_runs():
    """A killed test run leaves its hubs running, and their jobs on the local cluster and the sites:
    end them first."""
    if os.geteuid() != 0:
        return
    stop_test_hubs_left_running()
    if slurm_up():
        cancel_left_test_jobs()
    for site in SITE_NODES:
        if site_is_up(site):
            cancel_left_test_jobs(site_argv(site))


@pytest.fixture
def start_hub(cluster):
    """Factory: start_hub(name, base_path='/') -> a running hubs.Hub; all are stopped afterwards."""
    started = []

    def _start(name, base_path="/", settings_overrides=None):
        hub = hubs.running_hub(name, base_path, settings_overrides)
        started.append(hub)
        return hub

    yield _start
    job_ids = [job for hub in started for job in hubs.stop_servers(hub)]
    for job_id in job_ids:
        wait_for_job_end(job_id)
    for hub in started:
        hubs.stop_hub(hub)


@pytest.fixture
def hub(start_hub):
    return start_hub("hub")
