"""One spawn, POST to JupyterLab answering, on a simulated remote site (over SSH, the site's
runtime, the site's reach: LUMI reverse, through the tunnel gateway; JUPITER and Lucia forward,
through the tunnel daemon) against the local cluster (direct), alternating in the same run and on
the same hub (ratios and differences: the machine is shared and noisy). Aims: within 0.3 s of the
local site (issue 10), within 0.5 s per tunnel mode (issue 11).

    make bench-remote         # or: python -m benchmarks.bench_remote [--site lumi] [--repeats 5]

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
from tests.integration.sim_sites import SITE_USERS, SITES_ROOT, authorize_line  # noqa: E402

REQUESTS = {
    "local": {"partition": "cpu"},
    "lumi": {"site": "lumi", "partition": "small-g", "gpus": 1},
    "jupiter": {"site": "jupiter", "partition": "booster"},
    "lucia": {"site": "lucia", "partition": "gpu", "gpus": 1},
}
SIM_KEYS = ("sites", "catalogue_dir", "runtime_owners", "site_users", "hub_bind_address", "hub_egress_addresses")


def one_spawn(hub, token: str, options: dict) -> float:
    started = time.monotonic()
    r = hub.api("POST", "users/alice/server", token=token, json=options)
    r.raise_for_status()
    hubs.wait_ready(hub, "alice", timeout=300)
    elapsed = time.monotonic() - started
    hub.api("DELETE", "users/alice/server", token=token)
    deadline = time.monotonic() + 60
    while hubs.server_model(hub, "alice").get("pending") or hubs.server_model(hub, "alice").get("ready"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return elapsed


def main(site: str, repeats: int) -> None:
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
        one_spawn(hub, token, REQUESTS[site])  # warm: the user's first login to the site
        times = {"local": [], site: []}
        for _ in range(repeats):
            for where in ("local", site):
                times[where].append(one_spawn(hub, token, REQUESTS[where]))
    finally:
        hubs.stop_servers(hub)
        hubs.stop_hub(hub)
    local, remote = statistics.median(times["local"]), statistics.median(times[site])
    print(f"spawn POST -> JupyterLab answering, median of N={repeats} each, alternating on one hub:")
    print(f"  local cluster         {local:6.2f} s   {' '.join(f'{t:.2f}' for t in times['local'])}")
    print(f"  simulated {site:<10}  {remote:6.2f} s   {' '.join(f'{t:.2f}' for t in times[site])}")
    print(f"  remote - local: {remote - local:+.2f} s (aims: within 0.5 s through a tunnel, 0.3 s direct)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="lumi", choices=sorted(SITE_USERS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.site, args.repeats)
