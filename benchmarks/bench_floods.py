"""Another user's API calls while one account of the hub's host holds 2,000 connections to the hub's
API with half a request sent on each (issue 21, item 5): p50/p99 latency of alice's calls and the
hub's open descriptors, quiet and flooded, on a hub as shipped (the firewall's per-account limit,
idle connections closed after seconds) against the same hub unguarded (on a port the firewall's
table does not name, with tornado's defaults: an hour to send headers), in the same run.

    make bench-floods         # or: python -m benchmarks.bench_floods [--calls 200] [--connections 2000]

Needs the demo installed (make demo or make test's setup); run as root. The gateway's flood is
measured by tests/integration/test_floods.py (it prints the spawn's time under the flood).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration import hubs  # noqa: E402
from tests.integration.untrusted_helpers import HostileProgram  # noqa: E402

FLOODER = ROOT / "tests" / "integration" / "flooder.py"
TABLE = "aifa_workbench_hub_api"
HALF_A_REQUEST = r"GET /hub/api/ HTTP/1.1\r\nHost: hub\r\n"
# The shipped configuration, then tornado's own limits put back (what the hub had before the fix).
UNGUARDED_TAIL = """
from tornado.httpserver import HTTPServer
HTTPServer.initialize = HTTPServer.initialize.__wrapped__
"""


def latencies(hub, token: str, calls: int) -> list[float]:
    took = []
    for _ in range(calls):
        started = time.monotonic()
        hub.api("GET", "user", token=token, timeout=30).raise_for_status()
        took.append(time.monotonic() - started)
    return took


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def measure(hub, calls: int, connections: int) -> dict:
    token = hub.user_token("alice")
    latencies(hub, token, 10)
    quiet = latencies(hub, token, calls)
    fds_quiet = hub.open_descriptors()
    flood = HostileProgram(
        ["runuser", "-u", "bob", "--"],
        FLOODER,
        "127.0.0.1",
        str(hub.api_port),
        str(connections),
        "-",
        HALF_A_REQUEST,
        python="/usr/bin/python3",
    )
    try:
        if not flood.wait_ready(60):
            raise SystemExit("the flood did not start")
        time.sleep(5)
        flooded = latencies(hub, token, calls)
        fds_flooded = hub.open_descriptors()
    finally:
        lines = flood.stop()
    return {
        "quiet": quiet,
        "flooded": flooded,
        "fds": (fds_quiet, fds_flooded),
        "flood": json.loads(lines[-1]) if lines else {},
    }


def guarded_ports() -> str:
    listed = subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(f"the firewall table {TABLE} is not loaded: run make install first")
    return listed.stdout


def run_hub(name: str, unguarded: bool, calls: int, connections: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        overrides, config = None, None
        if unguarded:
            config = Path(tmp) / "jupyterhub_config.py"
            config.write_text((ROOT / "hub_config" / "jupyterhub_config.py").read_text() + UNGUARDED_TAIL)
            overrides = {"hub_port": hubs.free_port()}  # outside the table's ports (18100-18199)
            assert f" {overrides['hub_port']}" not in guarded_ports(), "the baseline's port is guarded"
        hub = hubs.running_hub(name, "/", overrides, config_source=config)
        if not unguarded:
            assert "18100-18199" in guarded_ports(), f"the test hubs' ports ({hub.api_port}) are not in {TABLE}"
        try:
            return measure(hub, calls, connections)
        finally:
            hubs.stop_servers(hub)
            hubs.stop_hub(hub)


def main(calls: int, connections: int) -> None:
    guarded = run_hub("benchguarded", False, calls, connections)
    unguarded = run_hub("benchunguarded", True, calls, connections)
    print(f"alice's GET /hub/api/user through the proxy, N={calls} each; bob holds {connections} half-sent requests")
    print(f"{'':24}{'quiet p50/p99 ms':>20}{'flooded p50/p99 ms':>22}{'descriptors':>16}  bob held")
    for label, r in (("as shipped", guarded), ("unguarded (before)", unguarded)):
        print(
            f"  {label:22}{p(r['quiet'], 0.5):9.1f} /{p(r['quiet'], 0.99):7.1f}"
            f"{p(r['flooded'], 0.5):12.1f} /{p(r['flooded'], 0.99):7.1f}"
            f"{r['fds'][0]:8} -> {r['fds'][1]:<6}  {r['flood'].get('most_held')}"
        )
    g, u = guarded, unguarded
    print(
        f"  flooded p99 / quiet p99: as shipped {p(g['flooded'], 0.99) / p(g['quiet'], 0.99):.2f}, "
        f"unguarded {p(u['flooded'], 0.99) / p(u['quiet'], 0.99):.2f}; median ratio as shipped "
        f"{statistics.median(g['flooded']) / statistics.median(g['quiet']):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    main(args.calls, args.connections)
