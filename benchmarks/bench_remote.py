"""One spawn, POST to JupyterLab answering, on a simulated remote site and environment (over SSH,
the site's own userland and Python, the environment's runtime, the site's reach: LUMI reverse,
through the tunnel gateway; JUPITER and Lucia forward, through the tunnel daemon) against the local
cluster (direct), alternating in the same run and on the same hub (ratios and differences: the
machine is shared and noisy). Aim (issue 23): within 1 s of local where the site runs natively;
the simulated JUPITER is aarch64 emulated by qemu, reported as it is.

    make bench-remote         # every site and environment, N=3 each
    python -m benchmarks.bench_remote --site lumi --environment pytorch-container --repeats 3

Needs the simulated sites (make sites); run as root.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration import hubs  # noqa: E402
from tests.integration.sim_sites import SIM_KEYS, SITE_USERS, SITES_ROOT, authorize_line  # noqa: E402

REQUESTS = {
    "local": {"partition": "cpu"},
    "lumi": {"site": "lumi", "partition": "small-g", "gpus": 1},
    "jupiter": {"site": "jupiter", "partition": "booster"},
    "lucia": {"site": "lucia", "partition": "gpu", "gpus": 1},
}


def one_spawn(hub, token: str, options: dict) -> float:
    started = time.monotonic()
    r = hub.api("POST", "users/alice/server", token=token, json=options)
    r.raise_for_status()
    hubs.wait_ready(hub, "alice", timeout=900)  # the emulated JUPITER's first start is minutes
    elapsed = time.monotonic() - started
    hub.api("DELETE", "users/alice/server", token=token)
    deadline = time.monotonic() + 60
    while hubs.server_model(hub, "alice").get("pending") or hubs.server_model(hub, "alice").get("ready"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return elapsed


def main(site: str, environment: str | None, repeats: int) -> None:
    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    hub = hubs.running_hub("benchremote", "/", {key: simulated[key] for key in SIM_KEYS})
    try:
        public = subprocess.run(
            [
                "runuser",
                "-u",
                "aifa-hub",
                "--",
                "env",
                f"AIFA_WORKBENCH_SETTINGS={hub.home}/workbench.yaml",
                "/opt/aifa-workbench/venv/bin/aifa-workbench",
                "user-key",
                "alice",
                site,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        authorize_line(site, SITE_USERS[site]["alice"], public)
        token = hub.user_token("alice")
        request = {**REQUESTS[site], **({"environment": environment} if environment else {})}
        one_spawn(hub, token, request)  # warm: the user's first login to the site
        times = {"local": [], site: []}
        for _ in range(repeats):
            times["local"].append(one_spawn(hub, token, REQUESTS["local"]))
            times[site].append(one_spawn(hub, token, request))
    finally:
        hubs.stop_servers(hub)
        hubs.stop_hub(hub)
    local, remote = statistics.median(times["local"]), statistics.median(times[site])
    print(f"spawn POST -> JupyterLab answering, median of N={repeats} each, alternating on one hub:")
    print(f"  local cluster         {local:6.2f} s   {' '.join(f'{t:.2f}' for t in times['local'])}")
    where = f"{site}/{environment or 'default'}"
    print(f"  simulated {where:<26}  {remote:6.2f} s   {' '.join(f'{t:.2f}' for t in times[site])}")
    aim = "emulated aarch64: reported as it is" if site == "jupiter" else "aim: within 1 s"
    print(f"  remote - local: {remote - local:+.2f} s, ratio {remote / local:.2f} ({aim})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="lumi", choices=sorted(SITE_USERS))
    parser.add_argument("--environment", help="an environment of the site's catalogue (default: its first)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.site, args.environment, args.repeats)
