"""Run inside a Slurm job (by bench_dask.py): Dask preset vs hand-written SLURMCluster, and the
sweep notebook's throughput. Prints one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import workbench
from dask.distributed import Client, wait
from dask_jobqueue import SLURMCluster

NOTEBOOK = Path(sys.argv[1])
REPEATS, WORKERS, TRIALS = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
USER = os.environ["USER"]


def jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-u", USER, "-n", name, "-o", "%i"], capture_output=True, text=True)
    return out.stdout.split()


def wait_gone(name: str) -> None:
    while jobs_named(name):
        time.sleep(0.5)


def preset_cluster(n):
    return workbench.dask_cluster("cpu-workers", workers=n)


def hand_written_cluster(n):
    """What a user would write by hand for the same workers (the dask-jobqueue docs' way)."""
    cluster = SLURMCluster(
        queue="cpu",
        account=os.environ["SLURM_JOB_ACCOUNT"],
        cores=1,
        processes=1,
        memory="2GB",
        walltime="01:00:00",
        interface="lo",
        local_directory="/tmp",
        job_name="aifa-dask-hand",
        job_extra_directives=["--export=NONE"],
        job_script_prologue=[f"export PATH={os.path.dirname(sys.executable)}:/usr/bin:/bin"],
        python=sys.executable,
        log_directory=os.path.expanduser("~/.aifa-workbench/dask-logs"),
    )
    cluster.scale(n)
    return cluster


def time_to_workers(make_cluster, job_name: str) -> tuple[float, float, float]:
    started = time.monotonic()
    cluster = make_cluster(WORKERS)
    constructed = time.monotonic() - started  # the call itself: catalogue, checks, sbatch of the workers
    client = Client(cluster)
    client.wait_for_workers(1, timeout=300)
    first = time.monotonic() - started
    client.wait_for_workers(WORKERS, timeout=300)
    every = time.monotonic() - started
    client.close()
    cluster.close()
    wait_gone(job_name)
    return first, every, constructed


def sweep_trial_function():
    """The `trial` function of the sweep notebook, taken from the notebook itself."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "def trial(" in "".join(c["source"]))
    exec(source, globals())  # noqa: S102  (our own bundled notebook; in __main__ so Dask ships it by value)
    return globals()["trial"]


def sweep_throughput(workers: int, trial) -> float:
    cluster = workbench.dask_cluster("gpu-workers", workers=workers)
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=300)
    client.run(lambda: __import__("torch").zeros(1).sum().item())  # warm-up: torch imported on every worker
    started = time.monotonic()
    futures = [client.submit(trial, 1e-2 * (1 + i % 3), 16 * (1 + i % 2), seed=i, pure=False) for i in range(TRIALS)]
    wait(futures)
    took = time.monotonic() - started
    client.close()
    cluster.close()
    wait_gone(f"aifa-dask-{USER}")
    return TRIALS * 60 / took


results = {"preset": [], "hand": []}
for repeat in range(REPEATS):
    order = [("preset", preset_cluster, f"aifa-dask-{USER}"), ("hand", hand_written_cluster, "aifa-dask-hand")]
    for kind, make, job_name in order[::-1] if repeat % 2 else order:  # alternate who goes first
        results[kind].append(time_to_workers(make, job_name))
trial = sweep_trial_function()
results["sweep"] = {w: sweep_throughput(w, trial) for w in (1, 2, 4)}
print(json.dumps(results))
