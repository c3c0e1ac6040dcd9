"""What watching N running servers on the remote sites costs the sites, per minute: controller
RPCs (each site's sdiag, the site users' RPCs only) and SSH logins (each login node's sshd log).
The workbench (its queue monitors: one squeue per site user per interval, over the user's one
persistent connection) against plain batchspawner configured for SSH as its README suggests
(`exec_prefix` = ssh to the login node as the user: one login and one squeue per server per poll),
in the same run, against the same real jobs on the simulated LUMI, JUPITER and Lucia.

    make bench-polling      # or: python -m benchmarks.bench_polling [--servers 10 20 40] [--window 60]

Both sides poll as a hub would: JupyterHub polls each server every 30 s (`Spawner.poll_interval`),
which for plain batchspawner is one `ssh … squeue` each; the workbench's poll reads its monitor,
which asks Slurm every 30 s (`queue_interval`) for all of a user's jobs on a site at once. Plain
batchspawner cannot start a server over SSH (the job's JUPYTERHUB_* variables do not cross SSH,
../shared/DESIGN.md), so the servers here are sleeping jobs of the site users, and the spawners
poll them as they would poll servers. Needs the simulated sites (make sites); run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.sim_sites import SITE_USERS, SITES_ROOT, in_site, sim_site  # noqa: E402

SITES = ("lumi", "jupiter", "lucia")
HUB_POLL_INTERVAL = 30.0  # JupyterHub's Spawner.poll_interval
# batchspawner's default query, re-quoted: its `-o '%T %B'` loses its quotes in the login node's
# shell (squeue: error: Unrecognized option: %B), so no poll would reach Slurm at all.
BASELINE_QUERY = "squeue -h -j {job_id} -o \"'%T %B'\""
RPC_BY_USER = re.compile(r"^\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", re.M)


def site_pairs() -> list[tuple[str, str]]:
    return [(site, user) for user in ("alice", "bob") for site in SITES]


def submit_sleepers(n: int) -> list[tuple[str, str, str]]:
    """n running jobs spread over the sites and their users: (site, hub user, job id)."""
    jobs = []
    pairs = site_pairs()
    for i in range(n):
        site, user = pairs[i % len(pairs)]
        site_user = SITE_USERS[site][user]
        home = (SITES_ROOT / site / "site.env").read_text().split("HOME_PATTERN=")[1].split()[0].strip('"')
        out = in_site(
            site,
            [
                "runuser",
                "-u",
                site_user,
                "--",
                "sbatch",
                "--parsable",
                "-t",
                "30",
                "-c",
                "1",
                "--mem=64M",
                "-o",
                "/dev/null",
                f"--chdir={home.replace('{user}', site_user)}",
                "--job-name=bench-poll",
                "--wrap",
                "sleep 1800",
            ],
            check=True,
        )
        jobs.append((site, user, out.stdout.strip().split(";")[0]))
    deadline = time.monotonic() + 120
    while any(state(site, job) != "RUNNING" for site, _, job in jobs):
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark's jobs did not all start within 120 s")
        time.sleep(1)
    return jobs


def state(site: str, job_id: str) -> str:
    return in_site(site, ["squeue", "-h", "-j", job_id, "-o", "%T"]).stdout.strip()


def cancel(jobs) -> None:
    for site in SITES:
        ids = [job for s, _, job in jobs if s == site]
        if ids:
            in_site(site, ["scancel", *ids])


def site_users_rpcs() -> int:
    """RPCs the site users sent each controller since the last reset (sdiag, by user)."""
    users = {u for site in SITES for u in SITE_USERS[site].values()}
    total = 0
    for site in SITES:
        out = in_site(site, ["sdiag"]).stdout
        total += sum(int(count) for name, count in RPC_BY_USER.findall(out.split("by user")[-1]) if name in users)
    return total


def logins() -> int:
    return sum(
        (SITES_ROOT / site / "log" / "sshd.log").read_text(errors="replace").count("Accepted publickey")
        for site in SITES
    )


def measure(window: float, side) -> tuple[float, float]:
    """Run `side(window, start)` (a coroutine function that calls `start()` when its measured
    window begins): (RPCs/min, logins/min) over that window."""
    before = {}

    def start():
        for site in SITES:
            in_site(site, ["sdiag", "--reset"])
        before["logins"] = logins()

    asyncio.run(side(window, start))
    per_minute = 60.0 / window
    return site_users_rpcs() * per_minute, (logins() - before["logins"]) * per_minute


async def polled_as_the_hub_does(spawners, window: float, interval: float) -> None:
    """Each spawner's poll() every `interval` s, the servers' phases spread over the interval.
    The loops end by themselves at the window's end: batchspawner's run_command swallows a task's
    cancellation (a bare `except:` around the command), so a cancelled poll would poll on forever."""
    end = time.monotonic() + window

    async def one(spawner, offset):
        await asyncio.sleep(offset)
        while time.monotonic() < end:
            await spawner.poll()
            await asyncio.sleep(min(interval, max(0.0, end - time.monotonic())))

    await asyncio.gather(*(one(s, (i + 0.5) * interval / len(spawners)) for i, s in enumerate(spawners)))


def baseline_spawners(jobs, sims, keydir: Path):
    from batchspawner import SlurmSpawner

    known_hosts = keydir / "known_hosts"
    known_hosts.write_text("".join(f"{sims[s].login.host} {sims[s].login.host_keys[0]}\n" for s in SITES))
    spawners = []
    for site, user, job_id in jobs:
        key = keydir / f"{site}-{user}"
        if not key.exists():
            key.write_bytes(sims[site].keys[user].export_private_key())
            key.chmod(0o600)
        prefix = (
            f"ssh -i {key} -o BatchMode=yes -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
            f"{SITE_USERS[site][user]}@{sims[site].login.host}"
        )
        spawner = SlurmSpawner(
            user=SimpleNamespace(name=user, url=f"/user/{user}/"),
            exec_prefix=prefix,
            batch_query_cmd=BASELINE_QUERY,
            req_keepvars="JUPYTERHUB_API_TOKEN",
        )  # no hub here
        spawner.job_id = job_id
        spawners.append(spawner)
    return spawners


async def plain_batchspawner(jobs, sims, window: float, start) -> None:
    with tempfile.TemporaryDirectory() as keydir:
        spawners = baseline_spawners(jobs, sims, Path(keydir))
        start()
        await polled_as_the_hub_does(spawners, window, HUB_POLL_INTERVAL)
        states = [s.job_status.split()[0] if s.job_status else "?" for s in spawners]
    if states.count("RUNNING") != len(states):
        print(
            f"  (plain batchspawner read {len(states) - states.count('RUNNING')} of {len(states)} jobs "
            f"as not running: {sorted(set(states))})",
            flush=True,
        )


def workbench_monitors(jobs, sims):
    """The hub's monitors: one per (site, user), each tracking that user's jobs there."""
    from aifa_workbench.spawners.queue_monitor import QueueMonitor

    monitors = {}
    for site, user, job_id in jobs:
        if (site, user) not in monitors:
            monitors[site, user] = QueueMonitor(
                (site, user), sims[site].control(), as_user=user, interval=HUB_POLL_INTERVAL
            )
        monitors[site, user].jobs[job_id] = None  # tracked; not track(), which would start polling now, unstaggered
    return monitors


async def workbench(jobs, sims, window: float, start) -> None:
    monitors = workbench_monitors(jobs, sims)
    try:  # the users' connections and first look, made when their servers started: not measured
        await asyncio.wait_for(asyncio.gather(*(m.poll() for m in monitors.values())), 120)
        start()
        spread = HUB_POLL_INTERVAL / len(monitors)  # the users' servers started at different times
        await asyncio.sleep(spread / 2)
        for monitor in monitors.values():
            monitor._ensure_running()
            await asyncio.sleep(spread)
        await asyncio.sleep(window - spread * (len(monitors) + 0.5))
        not_running = [j for m in monitors.values() for j, info in m.jobs.items() if not (info and info.active)]
        if not_running:
            print(f"  (the workbench read {len(not_running)} jobs as not running)", flush=True)
    finally:
        for monitor in monitors.values():
            if monitor._task:
                monitor._task.cancel()
        for monitor in monitors.values():
            monitor.control.runner.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per figure")
    args = parser.parse_args(argv)
    print(
        f"watching N running servers on the simulated LUMI, JUPITER and Lucia ({len(site_pairs())} site users), "
        f"per minute, {args.window:.0f} s windows, same run:",
        flush=True,
    )
    for n in args.servers:
        sims = {site: sim_site(site) for site in SITES}  # fresh keys, as the hub holds per user and site
        jobs = submit_sleepers(n)
        try:
            w_rpc, w_logins = measure(
                args.window, lambda window, start, jobs=jobs, sims=sims: workbench(jobs, sims, window, start)
            )
            p_rpc, p_logins = measure(
                args.window, lambda window, start, jobs=jobs, sims=sims: plain_batchspawner(jobs, sims, window, start)
            )
        finally:
            cancel(jobs)
        print(
            f"  {n:3d} servers: controller RPCs/min workbench {w_rpc:6.1f}  plain batchspawner {p_rpc:6.1f}  "
            f"(ratio {p_rpc / max(w_rpc, 0.1):.1f}x);  SSH logins/min workbench {w_logins:5.1f}  "
            f"plain batchspawner {p_logins:5.1f}",
            flush=True,
        )
    print(
        "  (not measured for the workbench: one login per site user when their first server starts, and "
        "the per-user reconciler's one squeue per site user every 10 minutes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
