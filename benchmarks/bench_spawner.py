"""Benchmarks of the workbench spawner against plain batchspawner.SlurmSpawner, both measured in
the same run on the local cluster (ratios, not absolute times: the machine is shared and noisy).

    make bench                      # or: python -m benchmarks.bench_spawner [--quick]

Figures:
  rpc      controller RPCs per minute (sdiag deltas) with N running servers
  scancel  seconds from `scancel` behind the hub's back to the hub marking the server stopped
  burst    N servers asked for at once: failures, API p99 / max latency (event-loop stalls)
  spawn    one spawn, POST to JupyterLab answering, against the floor: sbatch of a bare
           jupyterhub-singleuser answering, alternating with the spawns in the same run
Run as root with the cluster up (make install). Takes about 15 minutes (--quick: about 5).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration import hubs  # noqa: E402  (the test harness that starts real hubs)

from aifa_workbench.hub_config.proxy import proxy_argv  # noqa: E402
from aifa_workbench.model.settings import load_settings  # noqa: E402

BASELINE_CONFIG = ROOT / "benchmarks" / "baseline_jupyterhub_config.py"
BASELINE_SUDOERS = Path("/etc/sudoers.d/zz-aifa-bench-baseline")
USER = "alice"


@contextlib.contextmanager
def baseline_sudo_rule():
    """batchspawner runs `sudo -E -u USER sbatch|squeue|scancel ...` (its README's exec_prefix)."""
    BASELINE_SUDOERS.write_text(
        "aifa-hub ALL=(%aifa-users) SETENV: NOPASSWD: /usr/bin/sbatch, /usr/bin/squeue, /usr/bin/scancel\n"
    )
    BASELINE_SUDOERS.chmod(0o440)
    try:
        yield
    finally:
        BASELINE_SUDOERS.unlink(missing_ok=True)


def start_path_routing_proxy(hub) -> None:
    """The baseline hub has no per-user hosts (plain batchspawner configured as its README says):
    its proxy routes by path alone. The proxy's token goes from its file to the environment."""
    settings = load_settings(hub.home / "workbench.yaml")
    chp = shutil.which("configurable-http-proxy", path="/usr/local/bin:/usr/bin:/bin")
    argv = [arg for arg in proxy_argv(settings, chp) if arg != "--host-routing"]
    launch = (
        "import os, sys; os.environ['CONFIGPROXY_AUTH_TOKEN'] = open(sys.argv[1]).read().strip(); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    hub.proxy_proc = hubs._spawn(
        hub,
        [f"{hubs.VENV}/bin/python", "-c", launch, str(hub.home / "secrets" / "proxy-auth-token"), *argv],
        "proxy.log",
    )


def start_bench_hub(kind: str, limit: int):
    if kind != "plain":
        return hubs.running_hub(f"bench-{kind}", settings_overrides={"named_servers_per_user": limit})
    hub = hubs.write_hub_files(
        f"bench-{kind}", settings_overrides={"named_servers_per_user": limit}, config_source=BASELINE_CONFIG
    )
    hub.subdomains = False
    start_path_routing_proxy(hub)
    hubs.start_hub_process(hub)
    try:
        hubs.wait_until_up(hub)
    except Exception:
        hubs.stop_hub(hub)
        raise
    return hub


@contextlib.contextmanager
def bench_hub(kind: str, limit: int):
    hub = start_bench_hub(kind, limit)
    try:
        yield hub
    finally:
        servers = list_servers(hub)
        for name in servers:
            hub.api("DELETE", f"users/{USER}/servers/{name}", json={"remove": True}, timeout=120)
        for model in servers.values():
            if model.get("state", {}).get("job_id"):
                wait_gone(model["state"]["job_id"])
        hubs.stop_hub(hub)


def list_servers(hub) -> dict:
    return hub.api("GET", f"users/{USER}").json().get("servers", {})


def wait_gone(job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.3)


def start_servers(hub, names, options, timeout=300) -> tuple[int, list[float]]:
    """Ask for every named server at once; return (failures, seconds to ready per server)."""
    token = hub.user_token(USER)
    started = time.monotonic()
    for name in names:
        hub.api("POST", f"users/{USER}/servers/{name}", token=token, json=options, timeout=120)
    ready, failed = {}, set()
    while len(ready) + len(failed) < len(names) and time.monotonic() - started < timeout:
        servers = list_servers(hub)
        for name in names:
            model = servers.get(name)
            if name in ready or name in failed:
                continue
            if model and model.get("ready"):
                ready[name] = time.monotonic() - started
            elif not model or (not model.get("pending") and not model.get("ready")):
                failed.add(name)
        time.sleep(0.25)
    return len(names) - len(ready), sorted(ready.values())


def rpc_count() -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by message type")[1].split(
        "Remote Procedure Call statistics by user"
    )[0]
    return sum(int(part.split("count:")[1].split()[0]) for part in section.splitlines() if "count:" in part)


def rpcs_per_minute(window: float) -> float:
    subprocess.run(["sdiag", "--reset"], check=True, capture_output=True)
    before = rpc_count()
    time.sleep(window)
    return (rpc_count() - before - 1) * 60.0 / window


def bench_rpc(kind, counts, window) -> dict:
    options = {"partition": "cpu"} if kind == "workbench" else {}
    results = {}
    with bench_hub(kind, max(counts)) as hub:
        running = 0
        for n in counts:
            names = [f"s{i}" for i in range(running, n)]
            failures, _ = start_servers(hub, names, options)
            running = n
            time.sleep(5)  # let start-up polling settle
            results[n] = (rpcs_per_minute(window), failures)
    return results


def server_stopped_after_scancel(hub, name, options) -> float:
    failures, _ = start_servers(hub, [name], options)
    if failures:
        return float("nan")
    job_id = list_servers(hub)[name]["state"]["job_id"]
    cancelled = time.monotonic()
    subprocess.run(["scancel", job_id], check=True)
    while list_servers(hub).get(name, {}).get("ready") and time.monotonic() - cancelled < 90:
        time.sleep(0.05)
    took = time.monotonic() - cancelled
    hub.api("DELETE", f"users/{USER}/servers/{name}", json={"remove": True})
    return took


def bench_scancel(kind, repeats) -> list[float]:
    options = {"partition": "cpu"} if kind == "workbench" else {}
    with bench_hub(kind, 4) as hub:
        return [server_stopped_after_scancel(hub, f"c{i}", options) for i in range(repeats)]


class LatencyProbe(threading.Thread):
    """GET /hub/api/ every 50 ms; a stalled event loop shows up as a slow answer."""

    def __init__(self, hub):
        super().__init__(daemon=True)
        self.url, self.samples, self.stop_flag = hub.url + "hub/api/", [], threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            t0 = time.monotonic()
            with contextlib.suppress(requests.RequestException):
                requests.get(self.url, timeout=10)
            self.samples.append(time.monotonic() - t0)
            time.sleep(0.05)


def loop_lag_buckets(hub) -> dict[float, float]:
    """JupyterHub's own event-loop lag histogram (cumulative counts per upper bound, seconds)."""
    text = requests.get(hub.url + "hub/metrics", headers={"Authorization": f"token {hub.admin_token}"}, timeout=30).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("jupyterhub_event_loop_interval_seconds_bucket{"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def loop_lag_summary(before: dict, after: dict) -> tuple[float, int]:
    """(upper bound of the longest lag in seconds, ticks that lagged over 100 ms) between two snapshots."""
    delta = {b: after[b] - before.get(b, 0) for b in sorted(after)}
    total = delta.get(float("inf"), 0)
    longest = next((b for b, count in delta.items() if count >= total), float("inf"))
    over_100ms = int(total - delta.get(0.1, 0))
    return longest, over_100ms


def bench_burst(kind, n) -> dict:
    options = {"partition": "cpu"} if kind == "workbench" else {}
    with bench_hub(kind, n) as hub:
        probe = LatencyProbe(hub)
        lag_before = loop_lag_buckets(hub)
        probe.start()
        failures, ready_times = start_servers(hub, [f"b{i}" for i in range(n)], options, timeout=420)
        probe.stop_flag.set()
        probe.join()
        longest_lag, lagged_ticks = loop_lag_summary(lag_before, loop_lag_buckets(hub))
    samples = sorted(probe.samples)
    return {
        "failures": failures,
        "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
        "max_ms": 1000 * samples[-1],
        "last_ready_s": ready_times[-1] if ready_times else float("nan"),
        "lag_max_ms": 1000 * longest_lag,
        "lagged_ticks": lagged_ticks,
    }


def answers(url: str) -> bool:
    """The server's version endpoint answers itself (the hub, before the route exists, redirects)."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=5, allow_redirects=False).status_code == 200
    return False


def wait_answering(url: str, t0: float, timeout: float = 120) -> float:
    while time.monotonic() - t0 < timeout:
        if answers(url):
            return time.monotonic() - t0
        time.sleep(0.05)
    return float("nan")


def floor_once(hub, port: int) -> float:
    """sbatch a bare jupyterhub-singleuser (the workbench venv's, talking to the same hub, on a port
    chosen here) and wait until it answers: what any spawner has to wait for."""
    prefix = f"/user/{USER}/floor/"
    env = {
        "JUPYTERHUB_API_URL": hub.url + "hub/api",
        "JUPYTERHUB_API_TOKEN": hub.user_token(USER),
        "JUPYTERHUB_USER": USER,
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{USER}-floor",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        "PATH": "/usr/bin:/bin",
    }
    script = "#!/bin/bash\nexec /opt/aifa-workbench/venv/bin/jupyterhub-singleuser\n"
    t0 = time.monotonic()
    job = subprocess.run(
        [
            "sudo",
            "--preserve-env=" + ",".join(env),
            "-u",
            USER,
            "sbatch",
            "--parsable",
            "-p",
            "cpu",
            "-t",
            "10",
            "-o",
            "/dev/null",
            "--chdir=/tmp",
            "--mem=2G",
            "--export=" + ",".join(env),
        ],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    try:
        return wait_answering(f"http://127.0.0.1:{port}{prefix}api", t0)
    finally:
        subprocess.run(["scancel", job], check=False)
        wait_gone(job)


def spawn_once(hub, name, options) -> float:
    token = hub.user_token(USER)
    t0 = time.monotonic()
    hub.api("POST", f"users/{USER}/servers/{name}", token=token, json=options, timeout=120)
    took = wait_answering(hub.server_url(USER, name) + "api", t0)
    job_id = list_servers(hub).get(name, {}).get("state", {}).get("job_id")
    hub.api("DELETE", f"users/{USER}/servers/{name}", json={"remove": True})
    if job_id:
        wait_gone(job_id)
    return took


def bench_spawn(repeats) -> dict:
    """Floor and workbench alternate in one hub, so that both see the same machine load."""
    results = {"floor": [], "workbench": []}
    with bench_hub("workbench", 4) as hub:
        for i in range(repeats):
            results["floor"].append(floor_once(hub, hubs.free_port()))
            results["workbench"].append(spawn_once(hub, f"p{i}", {"partition": "cpu"}))
    with bench_hub("plain", 4) as hub:
        results["plain"] = [spawn_once(hub, f"p{i}", {}) for i in range(repeats)]
    return results


def median(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and shorter windows (about 5 minutes)")
    parser.add_argument("--only", choices=["rpc", "scancel", "burst", "spawn"], action="append")
    args = parser.parse_args(argv)
    counts, window, repeats, burst = ([5, 10], 30, 3, 10) if args.quick else ([10, 20, 40], 60, 5, 40)
    only = set(args.only or ["rpc", "scancel", "burst", "spawn"])
    with baseline_sudo_rule():
        if "spawn" in only:
            s = bench_spawn(repeats)
            f, w, p = median(s["floor"]), median(s["workbench"]), median(s["plain"])
            print(
                f"spawn (N={repeats}, median s): floor {f:.2f}  workbench {w:.2f} ({w - f:+.2f})  "
                f"plain batchspawner {p:.2f} ({p - f:+.2f})",
                flush=True,
            )
        if "scancel" in only:
            w, p = bench_scancel("workbench", repeats), bench_scancel("plain", max(2, repeats // 2))
            print(
                f"scancel -> server stopped (median s): workbench {median(w):.2f} (N={len(w)})  "
                f"plain batchspawner {median(p):.2f} (N={len(p)})  ratio {median(p) / median(w):.1f}x",
                flush=True,
            )
        if "rpc" in only:
            w, p = bench_rpc("workbench", counts, window), bench_rpc("plain", counts, window)
            for n in counts:
                print(
                    f"controller RPCs/min with {n} servers ({window:.0f} s window): workbench {w[n][0]:.1f} "
                    f"(failed {w[n][1]})  plain batchspawner {p[n][0]:.1f} (failed {p[n][1]})  "
                    f"ratio {p[n][0] / max(w[n][0], 0.1):.1f}x",
                    flush=True,
                )
        if "burst" in only:
            for kind in ("workbench", "plain"):
                b = bench_burst(kind, burst)
                print(
                    f"burst of {burst} at once, {kind}: failures {b['failures']}, API p99 {b['p99_ms']:.0f} ms, "
                    f"max {b['max_ms']:.0f} ms, event-loop lag max <= {b['lag_max_ms']:.0f} ms "
                    f"({b['lagged_ticks']} ticks over 100 ms), last ready after {b['last_ready_s']:.1f} s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
