"""Read the real Slurm state for assertions."""
from __future__ import annotations

import subprocess
import time


def job_fields(job_id: str) -> dict:
    """`scontrol show job` as a dict, or {} when Slurm no longer knows the job."""
    result = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        return {}
    fields = {}
    for token in result.stdout.split():
        key, _, value = token.partition("=")
        fields.setdefault(key, value)
    return fields


def job_state(job_id: str) -> str:
    return job_fields(job_id).get("JobState", "GONE")


def wait_for_job_end(job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    state = job_state(job_id)
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state not in ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING"):
            return state
        time.sleep(0.3)
    return state
