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


TEST_JOB_PREFIX = "aifa-wb-t"  # test hubs' ids start with "t" (hubs.test_hub_id); a demo hub's jobs are left alone


def cancel_left_test_jobs(prefix_argv=()) -> list[str]:
    """Cancel the jobs an earlier, killed test run left on a cluster (its hubs died, its jobs did not):
    they would hold GPUs and course limits the tests expect free. prefix_argv runs the tools in a site."""
    listed = subprocess.run(
        [*prefix_argv, "squeue", "--noheader", "--all", "--format=%i|%j"], capture_output=True, text=True
    )
    left = [
        job_id
        for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
        if name.startswith(TEST_JOB_PREFIX)
    ]
    if left:
        subprocess.run([*prefix_argv, "scancel", *left], capture_output=True)
    return left
