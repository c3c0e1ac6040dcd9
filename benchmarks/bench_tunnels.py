"""The tunnels, per reach mode, against direct (the local cluster), on one hub, in the same run
(ratios: the machine is shared and noisy):

- a 100 MB download from the notebook server through the proxy (`/files/`), MB/s: direct
  (local cluster), reverse (simulated LUMI, the tunnel gateway), forward (simulated JUPITER,
  the tunnel daemon): three servers up together, downloads alternating between them;
- healing a partition (every packet between the hub's side and the site dropped for 20 s) ->
  the notebook answering through the proxy again, reverse and forward;
- memory per tunnel at 40 tunnels, each carrying one open connection: the tunnel gateway's
  sshd processes (PSS of its `aifa-tunnel` sessions) and the tunnel daemon (RSS growth, 40
  forwards on one user's connection).

    make bench-tunnels        # or: python -m benchmarks.bench_tunnels [--repeats 5]

Needs the simulated sites (make sites); run as root. About 6 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aifa_workbench.sites.tunnel_client import ask  # noqa: E402
from tests.integration import hubs  # noqa: E402
from tests.integration.jupyter_client_helpers import execute  # noqa: E402
from tests.integration.sim_sites import (  # noqa: E402
    SIM_KEYS,
    SITE_NODES,
    SITE_USERS,
    SITES_ROOT,
    answers_through_the_proxy,
    authorize_line,
    heal,
    partition,
)

# mode: (site, request, the user whose server it is: one server each, all up together)
SITES = {
    "direct": ("local", {"partition": "cpu"}, "carol"),
    "reverse": ("lumi", {"site": "lumi", "partition": "small-g", "gpus": 1}, "alice"),
    "forward": ("jupiter", {"site": "jupiter", "partition": "booster"}, "bob"),
}
MB = 1 << 20
FILE = "aifa-bench-100mb.bin"
PARTITION_SECONDS = 20
TUNNELS = 40
STAND_IN_PORT = 18889


def spawn(hub, user: str, options: dict) -> str:
    hub.api("POST", f"users/{user}/server", token=hub.user_token(user), json=options).raise_for_status()
    hubs.wait_ready(hub, user, timeout=300)
    return hub.server_url(user)


def stop(hub, user: str) -> None:
    hub.api("DELETE", f"users/{user}/server", token=hub.user_token(user))
    deadline = time.monotonic() + 60
    while (
        hubs.server_model(hub, user).get("pending") or hubs.server_model(hub, user).get("ready")
    ) and time.monotonic() < deadline:
        time.sleep(0.3)


def download_mb_per_s(url: str, token: str) -> float:
    started, size = time.monotonic(), 0
    with requests.get(
        url + f"files/{FILE}", headers={"Authorization": f"token {token}"}, stream=True, timeout=120
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_content(MB):
            size += len(chunk)
    assert size == 100 * MB, size
    return size / MB / (time.monotonic() - started)


def throughput(hub, repeats: int) -> dict[str, list[float]]:
    """The three servers up together; downloads alternating between modes, `repeats` rounds."""
    urls = {mode: spawn(hub, user, options) for mode, (_, options, user) in SITES.items()}
    rates: dict[str, list[float]] = {mode: [] for mode in SITES}
    for mode, url in urls.items():
        token = hub.user_token(SITES[mode][2])
        execute(
            url,
            token,
            f"import os\nwith open({FILE!r}, 'wb') as f:\n    for _ in range(100): f.write(os.urandom(1 << 20))\n1",
        )
        download_mb_per_s(url, token)  # warm
    for _ in range(repeats):
        for mode, url in urls.items():
            rates[mode].append(download_mb_per_s(url, hub.user_token(SITES[mode][2])))
    for mode, url in urls.items():
        execute(url, hub.user_token(SITES[mode][2]), f"import os; os.remove({FILE!r}); 1")
    return rates


def heal_to_answer(hub, repeats: int) -> dict[str, list[float]]:
    """With the servers still up: each tunnel mode's site cut off and healed, `repeats` times."""
    seconds: dict[str, list[float]] = {}
    for mode in ("reverse", "forward"):
        site, _, user = SITES[mode]
        token = hub.user_token(user)
        seconds[mode] = []
        for _ in range(repeats):
            assert answers_through_the_proxy(hub, token, user=user)
            partition(site)
            try:
                time.sleep(PARTITION_SECONDS)
            finally:
                heal(site)
            healed = time.monotonic()
            while not answers_through_the_proxy(hub, token, timeout=0.2, user=user):
                assert time.monotonic() - healed < 60, f"{site}: no answer within 60 s of healing"
            seconds[mode].append(time.monotonic() - healed)
    return seconds


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def gateway_session_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "^sshd: aifa-tunnel"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def hold_connections(ports: list[int]) -> list[socket.socket]:
    """One open connection through each tunnel (a request begun, never finished)."""
    held = []
    for port in ports:
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    time.sleep(1)
    return held


def stand_in_server(site: str) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            f"aifa-{site}",
            "python3",
            "-m",
            "http.server",
            str(STAND_IN_PORT),
            "--bind",
            "0.0.0.0",
            "--directory",
            "/var/empty",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    return server


def gateway_memory() -> tuple[float, int]:
    """(KiB of PSS per tunnel, sessions) with 40 jobs' reverse tunnels, each carrying a connection,
    less what the gateway's sessions held before (other jobs' tunnels)."""
    from tests.integration.test_gateway_policy import Job, background_ssh

    before = sum(pss_kib(pid) for pid in gateway_session_pids())
    server = stand_in_server("lumi")
    jobs, clients = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(TUNNELS):
                job = Job(Path(tmp) / f"job{i}", 600)
                jobs.append(job)
                clients.append(background_ssh(job, "-N", "-R", f"localhost:{job.grant.port}:127.0.0.1:{STAND_IN_PORT}"))
            deadline = time.monotonic() + 60
            while not all(_answers(job.grant.port) for job in jobs):
                assert time.monotonic() < deadline, "not every reverse tunnel came up"
                time.sleep(0.3)
            held = hold_connections([job.grant.port for job in jobs])
            pids = gateway_session_pids()
            total = sum(pss_kib(pid) for pid in pids)
            for s in held:
                s.close()
    finally:
        for client in clients:
            client.terminate()
            client.wait()
        for job in jobs:
            job.revoke()
        server.terminate()
        server.wait()
    return (total - before) / TUNNELS, len(pids)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def tunnel_daemon_memory(hub) -> tuple[float, int, int]:
    """(KiB of RSS growth per forward, RSS before, RSS after) with 40 forwards on bob's
    JUPITER connection (made by a first forward, before), each carrying a connection. Run first:
    the hub's reconciler closes forwards no server owns, at its start and every 10 minutes."""
    sock = str(hub.home / "tunneld.sock")
    server = stand_in_server("jupiter")
    ids = [f"bob/bench{i}.0" for i in range(TUNNELS + 1)]

    def open_forward(forward_id: str) -> int:
        return asyncio.run(
            ask(
                sock,
                {
                    "op": "open",
                    "id": forward_id,
                    "site": "jupiter",
                    "user": "bob",
                    "host": SITE_NODES["jupiter"],
                    "port": STAND_IN_PORT,
                },
            )
        )["local_port"]

    try:
        pid = hub.tunneld_proc.pid
        hold_connections([open_forward(ids[0])])  # the login, and a first forward
        before = rss_kib(pid)
        held = hold_connections([open_forward(forward_id) for forward_id in ids[1:]])
        after = rss_kib(pid)
        for s in held:
            s.close()
    finally:
        for forward_id in ids:
            asyncio.run(ask(sock, {"op": "close", "id": forward_id}))
        server.terminate()
        server.wait()
    return (after - before) / TUNNELS, before, after


def main(repeats: int) -> None:
    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    hub = hubs.running_hub("benchtunnels", "/", {key: simulated[key] for key in SIM_KEYS})
    try:
        for site, user in (("lumi", "alice"), ("jupiter", "bob")):
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
                    user,
                    site,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            authorize_line(site, SITE_USERS[site][user], public)
        daemon = tunnel_daemon_memory(hub)
        gateway = gateway_memory()
        rates = throughput(hub, repeats)
        healing = heal_to_answer(hub, max(1, repeats // 2 + 1))
    finally:
        hubs.stop_servers(hub)
        hubs.stop_hub(hub)
    report(repeats, rates, healing, daemon, gateway)


def report(repeats, rates, healing, daemon, gateway) -> None:
    direct = statistics.median(rates["direct"])
    print(f"100 MB download from the notebook server through the proxy, MB/s, median of N={repeats}:")
    for mode, (site, _, _) in SITES.items():
        median = statistics.median(rates[mode])
        print(
            f"  {mode:<8} ({site:<7}) {median:7.1f}  x{median / direct:.2f} of direct   "
            f"{' '.join(f'{r:.0f}' for r in rates[mode])}"
        )
    print(f"partition of {PARTITION_SECONDS} s healed -> the notebook answers through the proxy (aim: within 2 s):")
    for mode, seconds in healing.items():
        print(
            f"  {mode:<8} ({SITES[mode][0]:<7}) median {statistics.median(seconds):.2f} s, "
            f"max {max(seconds):.2f} s (N={len(seconds)})"
        )
    per, before, after = daemon
    print(f"memory at {TUNNELS} tunnels, each carrying one connection:")
    print(
        f"  tunnel daemon: {per:.0f} KiB RSS per forward ({before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        "40 forwards on one user's connection)"
    )
    per_gw, sessions = gateway
    print(f"  tunnel gateway: {per_gw:.0f} KiB PSS per tunnel ({sessions} sshd processes of aifa-tunnel sessions)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    main(parser.parse_args().repeats)
