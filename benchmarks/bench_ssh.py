"""Commands on a simulated site's login node: the workbench's persistent SSH connection per site
user (sites.ssh.SshRunner) against a new `ssh` per command (batchspawner's `exec_prefix` way),
in the same run, on the same login node (ratios: the machine is shared and noisy).

    make bench-ssh          # or: python -m benchmarks.bench_ssh [--site lucia] [--commands 200]

Figures: commands per second and median latency of each way; logins on the site's sshd (its log
counts "Accepted publickey") per way. Needs the simulated sites (make sites); run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.sim_sites import SITE_USERS, SITES_ROOT, sim_site  # noqa: E402


def logins(site: str, site_user: str) -> int:
    log = (SITES_ROOT / site / "log" / "sshd.log").read_text(errors="replace")
    return log.count(f"Accepted publickey for {site_user} ")


async def persistent(runner, n: int, channels: int) -> list[float]:
    latencies = []
    gate = asyncio.Semaphore(channels)

    async def one():
        async with gate:
            started = time.perf_counter()
            result = await runner.run(["true"], as_user="alice")
            assert result.ok, result
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(n)))
    return latencies


def fresh_ssh(site, n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        key, known = Path(tmp) / "key", Path(tmp) / "known_hosts"
        key.write_bytes(site.keys["alice"].export_private_key())
        key.chmod(0o600)
        known.write_text(f"{site.login.host} {site.login.host_keys[0]}\n")
        argv = [
            "ssh",
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
            f"{SITE_USERS[site.name]['alice']}@{site.login.host}",
            "true",
        ]
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            latencies.append(time.perf_counter() - started)
        return latencies


def line(name: str, latencies: list[float], wall: float, new_logins: int) -> str:
    return (
        f"{name:<34} N={len(latencies):<4} {len(latencies) / wall:7.1f} cmd/s   median {statistics.median(latencies) * 1000:6.1f} ms"
        f"   logins {new_logins}"
    )


async def main(site_name: str, n: int, n_fresh: int) -> None:
    site = sim_site(site_name)
    user = SITE_USERS[site_name]["alice"]
    runner = site.runner(max_channels=8)
    await runner.run(["true"], as_user="alice")  # the one login of this user
    rows = []
    for name, channels in (("persistent, 1 command at a time", 1), ("persistent, 8 channels", 8)):
        before, started = logins(site_name, user), time.perf_counter()
        lat = await persistent(runner, n, channels)
        rows.append((name, lat, time.perf_counter() - started, logins(site_name, user) - before))
    before, started = logins(site_name, user), time.perf_counter()
    lat = await asyncio.to_thread(fresh_ssh, site, n_fresh)
    rows.append(
        ("new ssh per command (baseline)", lat, time.perf_counter() - started, logins(site_name, user) - before)
    )
    runner.close()
    print(f"Commands on the login node of simulated {site_name} ({site.login.host}), as {user}:")
    for row in rows:
        print(line(*row))
    base = len(rows[2][1]) / rows[2][2]
    print(
        f"ratio vs baseline: persistent sequential x{len(rows[0][1]) / rows[0][2] / base:.1f}, "
        f"8 channels x{len(rows[1][1]) / rows[1][2] / base:.1f} (commands per second)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="lucia", choices=sorted(SITE_USERS))
    parser.add_argument("--commands", type=int, default=200, help="commands per persistent run")
    parser.add_argument("--fresh", type=int, default=30, help="commands with a new ssh each")
    args = parser.parse_args()
    asyncio.run(main(args.site, args.commands, args.fresh))
