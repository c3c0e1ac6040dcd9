"""Login to the spawn form: through the OpenID Connect provider (the demo's, npm's oidc-provider:
the hub's login button, the provider's sign-in and consent forms, the code exchange, the userinfo
call) against the per-user password login, on two hubs started side by side, alternating, N times.

    make bench-login      # or: python -m benchmarks.bench_login [-n 20]

Each round is a fresh browser-like session: GET the login, log in, GET /hub/spawn (the form).
Prints the median and p90 of each and their ratio. Needs the cluster and the provider's code
(make install); run as root (the hubs run as the hub's service user).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration import hubs  # noqa: E402
from tests.integration.oidc_provider import login_through, make_provider, person, start_oidc_hub  # noqa: E402


def password_round(hub) -> float:
    began = time.perf_counter()
    session = hubs.login(hub, "bob")
    form = session.get(hub.url + "hub/spawn", timeout=30)
    assert form.ok and 'id="aifa-profile"' in form.text, form.status_code
    return time.perf_counter() - began


def oidc_round(hub, provider) -> float:
    began = time.perf_counter()
    session = requests.Session()
    session.get(hub.url + "hub/login", timeout=30).raise_for_status()  # the page with the login button
    page = login_through(hub.url, provider, "bob", session=session)
    assert page.ok, (page.status_code, page.url)
    form = session.get(hub.url + "hub/spawn", timeout=30)
    assert form.ok and 'id="aifa-profile"' in form.text, form.status_code
    return time.perf_counter() - began


def oidc_hub():
    provider = make_provider([person("bob", ["workbench"])])
    return start_oidc_hub("bench-oidc", provider, {"bob": "bob"}), provider


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{name:<28} median {statistics.median(times) * 1000:7.0f} ms   p90 {p90 * 1000:7.0f} ms   (N={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="rounds of each login (default 20)")
    n = parser.parse_args().n
    password_hub = hubs.running_hub("bench-password")
    oidc_hub_, provider = oidc_hub()
    try:
        password_round(password_hub), oidc_round(oidc_hub_, provider)  # warm both up once
        times = {"password": [], "oidc": []}
        for _ in range(n):
            times["password"].append(password_round(password_hub))
            times["oidc"].append(oidc_round(oidc_hub_, provider))
    finally:
        hubs.stop_hub(password_hub)
        hubs.stop_hub(oidc_hub_)
        provider.stop()
    print("login -> spawn form, fresh session each round, alternating")
    print(summary("per-user password (baseline)", times["password"]))
    print(summary("OIDC (provider's forms)", times["oidc"]))
    print(
        f"ratio OIDC / password (medians): {statistics.median(times['oidc']) / statistics.median(times['password']):.2f}"
    )


if __name__ == "__main__":
    main()
