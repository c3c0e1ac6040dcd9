"""A workshop's first minute: N participants join a course with its code and start their
sessions at once, against the same burst without courses (N servers of one project member, same
partition and hours, no reservation), on one hub, the baseline first.

    make bench-courses      # or: python -m benchmarks.bench_courses [--sizes 20 40]

Prints per size and kind: failures, seconds to the last join, seconds to the last JupyterLab
(from the first start request), the hub's event-loop lag (its own histogram: the longest bound
reached, ticks over 100 ms) and the API's p99 while it happens; then the ratios. Run as root with
the cluster up (make install); the course path needs the guest pool (workbench_guest_count).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_spawner import LatencyProbe, loop_lag_buckets, loop_lag_summary, wait_gone  # noqa: E402
from tests.integration import hubs  # noqa: E402

SESSION = {"partition": "cpu", "hours": 0.25}
OWNER = "carol"  # a member of proj_training: the baseline's servers and the course's payer


def wait_ready(hub, servers: list[tuple[str, str]], started: float, timeout: float = 420) -> tuple[int, float]:
    """(failures, seconds from `started` to the last ready) of (user, server name) pairs."""
    ready, failed = {}, set()
    while len(ready) + len(failed) < len(servers) and time.monotonic() - started < timeout:
        for user in {u for u, _ in servers}:
            models = hub.api("GET", f"users/{user}").json().get("servers", {})
            for pair in [p for p in servers if p[0] == user and p not in ready and p not in failed]:
                model = models.get(pair[1])
                if model and model.get("ready"):
                    ready[pair] = time.monotonic() - started
                elif not model or not model.get("pending"):
                    failed.add(pair)
        time.sleep(0.25)
    return len(servers) - len(ready), max(ready.values(), default=float("nan"))


def measured(hub, burst) -> dict:
    """Run `burst()` (which returns (failures, last ready, extra)) under the lag and latency probes."""
    probe, lag_before = LatencyProbe(hub), loop_lag_buckets(hub)
    probe.start()
    try:
        failures, last_ready, extra = burst()
    finally:
        probe.stop_flag.set()
        probe.join()
    longest, lagged = loop_lag_summary(lag_before, loop_lag_buckets(hub))
    samples = sorted(probe.samples)
    return {
        "failures": failures,
        "last_ready_s": last_ready,
        "lag_max_ms": 1000 * longest,
        "lagged_ticks": lagged,
        "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
        **extra,
    }


def baseline_burst(hub, n: int) -> dict:
    token = hub.user_token(OWNER)
    names = [f"b{i}" for i in range(n)]

    def burst():
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            list(
                pool.map(
                    lambda name: hub.api(
                        "POST",
                        f"users/{OWNER}/servers/{name}",
                        token=token,
                        json={**SESSION, "account": "proj_training"},
                        timeout=120,
                    ),
                    names,
                )
            )
        failures, last = wait_ready(hub, [(OWNER, name) for name in names], started)
        return failures, last, {"last_join_s": 0.0}

    try:
        return measured(hub, burst)
    finally:
        stop_all(hub, [(OWNER, name) for name in names])


def course_burst(hub, n: int, ident: str) -> dict:
    now = time.time()
    r = hub.api(
        "POST",
        "courses",
        token=hub.user_token("alice"),
        timeout=120,
        json={
            "id": ident,
            "title": f"Burst of {n}",
            "site": "local",
            "partition": "cpu",
            "gpus": 0,
            "hours": 0.25,
            "starts_at": now - 60,
            "ends_at": now + 1800,
            "size": n,
            "project": "proj_training",
        },
    )
    r.raise_for_status()
    code = r.json()["code"]
    people = [f"{ident}-p{i:02d}" for i in range(n)]
    tokens = {}
    for name in people:
        hub.api("POST", f"users/{name}", token=hub.user_token("alice")).raise_for_status()  # an admin makes users
        tokens[name] = hub.user_token(name)

    def burst():
        started = time.monotonic()

        def join_and_start(name):
            joined = hub.api("POST", "courses/join", token=tokens[name], json={"code": code}, timeout=120)
            joined_at = time.monotonic() - started
            if joined.status_code != 200:
                print(f"{name} could not join: {joined.text[:300]}", flush=True)
            else:
                hub.api(
                    "POST",
                    f"users/{name}/servers/course-{ident}",
                    token=tokens[name],
                    json={"course": ident},
                    timeout=120,
                )
            return joined_at

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            last_join = max(pool.map(join_and_start, people))
        failures, last = wait_ready(hub, [(name, f"course-{ident}") for name in people], started)
        return failures, last, {"last_join_s": last_join}

    try:
        return measured(hub, burst)
    finally:
        hub.api("POST", f"courses/{ident}/end", token=hub.user_token("alice"), timeout=600)


def stop_all(hub, servers) -> None:
    jobs = []
    for user, name in servers:
        model = hub.api("GET", f"users/{user}").json().get("servers", {}).get(name) or {}
        jobs.append((model.get("state") or {}).get("job_id"))
        hub.api("DELETE", f"users/{user}/servers/{name}", json={"remove": True}, timeout=120)
    for job_id in filter(None, jobs):
        wait_gone(job_id)


def line(kind: str, n: int, b: dict) -> str:
    return (
        f"{kind:<16} N={n:<3} failures {b['failures']}, last join {b['last_join_s']:5.1f} s, "
        f"last JupyterLab {b['last_ready_s']:5.1f} s, event-loop lag max <= {b['lag_max_ms']:.0f} ms "
        f"({b['lagged_ticks']} ticks over 100 ms), API p99 {b['p99_ms']:.0f} ms"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40])
    args = parser.parse_args(argv)
    hub = hubs.running_hub(
        "bench-courses",
        settings_overrides={
            "named_servers_per_user": max(args.sizes),
            "courses": {"trainers": ["alice"], "every_seconds": 5, "guest_count": 40},
        },
    )
    try:
        for n in args.sizes:
            base = baseline_burst(hub, n)
            print(line("without courses", n, base), flush=True)
            course = course_burst(hub, n, f"burst{n}-{int(time.time()) % 100000}")
            print(line("course", n, course), flush=True)
            print(
                f"{'ratio':<16} N={n:<3} last JupyterLab x{course['last_ready_s'] / base['last_ready_s']:.2f}, "
                f"API p99 x{course['p99_ms'] / base['p99_ms']:.2f}",
                flush=True,
            )
    finally:
        hubs.stop_servers(hub)
        hubs.stop_hub(hub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
