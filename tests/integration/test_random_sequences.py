"""A randomized sequence of starts, stops, restarts of the hub and cancellations behind its back;
after each step settles, the set of running workbench jobs in Slurm equals the set of servers
the hub runs."""

import os
import random
import signal
import subprocess
import time

import pytest

from . import hubs
from .hubs import server_model, wait_until_up

pytestmark = pytest.mark.slurm
USERS = ("alice", "bob", "carol")
STEPS = int(os.environ.get("AIFA_RANDOM_STEPS", "12"))


def slurm_jobs(hub) -> dict[str, str]:
    """user -> job id of running/pending workbench jobs."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%j|%u", "--states=PENDING,CONFIGURING,RUNNING"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = {}
    for line in out.split():
        job_id, name, user = line.split("|")
        if user in USERS and name == hub.job_name(user):
            jobs.setdefault(user, set()).add(job_id)
    return jobs


def hub_servers(hub) -> dict[str, str]:
    return {u: m["state"]["job_id"] for u in USERS if (m := server_model(hub, u)) and m.get("state", {}).get("job_id")}


def settle(hub, timeout=60):
    """Wait until no server is pending and Slurm and the hub agree; return both views."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [u for u in USERS if server_model(hub, u).get("pending")]
        servers, jobs = hub_servers(hub), slurm_jobs(hub)
        if not pending and {u: {j} for u, j in servers.items()} == jobs:
            return servers, jobs
        if time.monotonic() > deadline:
            return servers, jobs
        time.sleep(0.5)


def test_random_starts_stops_restarts_and_cancels_leave_no_orphan(hub):
    seed = int(os.environ.get("AIFA_RANDOM_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    tokens = {u: hub.user_token(u) for u in USERS}
    history = []
    for _ in range(STEPS):
        user = rng.choice(USERS)
        action = rng.choice(["start", "start", "stop", "scancel", "restart"])
        history.append((action, user))
        if action == "start":
            hub.api("POST", f"users/{user}/server", token=tokens[user], json={"partition": "cpu"})
        elif action == "stop":
            hub.api("DELETE", f"users/{user}/server", token=tokens[user])
        elif action == "scancel":
            job = server_model(hub, user).get("state", {}).get("job_id")
            if job:
                subprocess.run(["scancel", job], check=True)
        else:
            hub.proc.send_signal(signal.SIGKILL)
            hub.proc.wait()
            hubs.start_hub_process(hub)
            wait_until_up(hub)
        servers, jobs = settle(hub)
        assert {u: {j} for u, j in servers.items()} == jobs, (
            f"seed {seed}, after {history}: hub runs {servers}, Slurm runs {jobs}\n{hub.log_tail()}"
        )
