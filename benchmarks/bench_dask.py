"""Dask presets: time from `workbench.dask_cluster(...)` to the first and to all N workers, against
a hand-written dask-jobqueue SLURMCluster with the same resources, alternating in the same Slurm
job; and the sweep notebook's throughput (trials per minute) with 1, 2 and 4 GPU-preset workers.

    make bench-dask            (about 3 minutes; BENCH_ARGS="--repeats 5 --workers 4")

Runs as root with the cluster up (make install); the measuring job runs as a demo user.
"""

from __future__ import annotations

import argparse
import json
import pwd
import shutil
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path("/opt/aifa-workbench/venv")
USER = "alice"

JOB = """#!/bin/bash
#SBATCH --job-name=aifa-bench-dask
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=60
#SBATCH --output={workdir}/job.log
#SBATCH --export=NONE
set -euo pipefail
export HOME={home} USER={user} PATH={venv}/bin:/usr/local/bin:/usr/bin:/bin
export AIFA_WORKBENCH_SITE=local AIFA_WORKBENCH_ENVIRONMENT=workbench
{venv}/bin/python {workdir}/dask_in_job.py {workdir}/sweep.ipynb {repeats} {workers} {trials} > {workdir}/result.json
"""


def run_in_job(repeats: int, workers: int, trials: int) -> dict:
    account = pwd.getpwnam(USER)
    workdir = Path(account.pw_dir) / f"bench-dask-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    try:
        shutil.copyfile(ROOT / "benchmarks" / "dask_in_job.py", workdir / "dask_in_job.py")
        shutil.copyfile(ROOT / "notebooks" / "04-hyperparameter-sweep.ipynb", workdir / "sweep.ipynb")
        for path in (workdir, *workdir.iterdir()):
            shutil.chown(path, USER, account.pw_gid)
        script = JOB.format(
            home=account.pw_dir, user=USER, venv=VENV, workdir=workdir, repeats=repeats, workers=workers, trials=trials
        )
        run = subprocess.run(
            ["sudo", "-u", USER, "sbatch", "--wait", "--parsable"], input=script, text=True, capture_output=True
        )
        if run.returncode != 0:
            log = (workdir / "job.log").read_text() if (workdir / "job.log").exists() else ""
            sys.exit(f"the benchmark job failed: {run.stderr}\n{log[-3000:]}")
        return json.loads((workdir / "result.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args(argv)
    r = run_in_job(args.repeats, args.workers, args.trials)
    for label, index in (("first worker", 0), (f"all {args.workers} workers", 1)):
        preset, hand = ([t[index] for t in r[kind]] for kind in ("preset", "hand"))
        p_med, h_med = statistics.median(preset), statistics.median(hand)
        print(
            f"dask_cluster() to {label} (N={args.repeats}, s): preset median {p_med:.2f} min {min(preset):.2f}  "
            f"hand-written SLURMCluster median {h_med:.2f} min {min(hand):.2f}  "
            f"(preset - hand: {p_med - h_med:+.2f} median, {min(preset) - min(hand):+.2f} min; "
            f"spread of the hand-written runs {max(hand) - min(hand):.2f})",
            flush=True,
        )
    preset_call = statistics.median(t[2] for t in r["preset"])
    hand_call = statistics.median(t[2] for t in r["hand"])
    print(
        f"the call itself, dask_cluster() vs SLURMCluster(...)+scale() (median, s): preset {preset_call:.3f}  "
        f"hand-written {hand_call:.3f}  (preset - hand: {preset_call - hand_call:+.3f} s)",
        flush=True,
    )
    one = r["sweep"]["1"]
    print(
        f"sweep notebook ({args.trials} trials), trials/min: "
        + "  ".join(f"{w} worker{'s' if w != '1' else ''} {v:.1f} ({v / one:.2f}x)" for w, v in r["sweep"].items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
