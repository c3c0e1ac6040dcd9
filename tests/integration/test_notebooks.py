"""Each starter notebook runs top to bottom inside a real Slurm job, as a user, CPU-only here
(it uses a GPU where one is present). Dask notebooks start their workers as real jobs."""

import json
import pwd
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
VENV = Path("/opt/aifa-workbench/venv")
USER = "alice"

JOB = """#!/bin/bash
#SBATCH --job-name=aifa-nbtest-{user}
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=20
#SBATCH --output={workdir}/job.log
#SBATCH --export=NONE
set -euo pipefail
export HOME={home} USER={user} PATH={venv}/bin:/usr/local/bin:/usr/bin:/bin
export AIFA_WORKBENCH_SITE=local AIFA_WORKBENCH_ENVIRONMENT=workbench
export DASK_DISTRIBUTED__DASHBOARD__LINK='{{JUPYTERHUB_SERVICE_PREFIX}}proxy/{{port}}/status'
cd {workdir}
{venv}/bin/jupyter execute --inplace --timeout=180 {notebook}
"""


@pytest.fixture
def workdir():
    account = pwd.getpwnam(USER)
    path = Path(account.pw_dir) / f"nbtest-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    shutil.chown(path, USER, account.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def errors_in(notebook: dict) -> list[str]:
    return [
        f"{o['ename']}: {o['evalue']}"
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def run_job(script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The job submitted as the user, once it ended: returncode 0 if it COMPLETED. Its end is
    watched every 0.5 s (`sbatch --wait` asks at growing intervals, up to half a minute late)."""
    submitted = subprocess.run(
        ["sudo", "-u", USER, "sbatch", "--parsable"], input=script, text=True, capture_output=True, timeout=60
    )
    if submitted.returncode != 0:
        return submitted
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
        state = re.search(r"\bJobState=(\S+)", shown)
        if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"):
            ended = f"job {job_id}: {state.group(1)}"
            return subprocess.CompletedProcess(submitted.args, 0 if state.group(1) == "COMPLETED" else 1, "", ended)
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], check=False)
    return subprocess.CompletedProcess(submitted.args, 124, "", f"job {job_id} did not end within {timeout:g} s")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_starter_notebook_runs_top_to_bottom_in_a_slurm_job(name, workdir):
    target = workdir / name
    shutil.copyfile(ROOT / "notebooks" / name, target)
    shutil.chown(target, USER)
    script = JOB.format(user=USER, home=pwd.getpwnam(USER).pw_dir, venv=VENV, workdir=workdir, notebook=name)
    started = time.monotonic()
    run = run_job(script)
    log = (workdir / "job.log").read_text() if (workdir / "job.log").exists() else ""
    if run.returncode != 0 and "Timeout waiting for execute reply" in log:
        # nbclient and a fresh kernel have been seen (once in many runs) to wait on each other
        # forever before the first cell: that is the runner's, not the notebook's; run it once more
        print(f"{name}: the first run hung before a cell answered ({log.splitlines()[-1][:200]}); running it again")
        shutil.copyfile(ROOT / "notebooks" / name, target)
        started = time.monotonic()
        run = run_job(script)
        log = (workdir / "job.log").read_text() if (workdir / "job.log").exists() else ""
    took = time.monotonic() - started
    assert run.returncode == 0, f"{run.stderr}\n{log[-3000:]}"
    executed = json.loads(target.read_text())
    code_cells = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code_cells), "not every cell ran"
    assert not errors_in(executed)
    print(f"{name}: {took:.1f} s in a Slurm job")
