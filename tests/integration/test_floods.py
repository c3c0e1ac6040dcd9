"""One user cannot starve the rest (issue 21, item 5). A LUMI user floods the hub's tunnel gateway
with connections that never authenticate; a LUMI user, and a user of the hub's own host, hold
hundreds of connections to the hub's API with half a request sent on each. Another user's LUMI
server still starts and answers, the API still answers everyone else, and the hub's descriptors
stay bounded: the gateway's sshd and this host's firewall bound what one address or one account
may hold, and the hub closes a connection idle for seconds, not an hour.

On LUMI a compute node leaves through one of a few NAT addresses; here the attacker's node has an
address of its own on the simulated LUMI's network (ATTACKER), the victim's job the usual one."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from aifa_workbench.hub_config.limits import FIRST_REQUEST_SECONDS

from .hubs import wait_ready
from .sim_sites import SITE_PYTHON, answers_through_the_proxy, in_site, site_argv
from .test_remote_spawn import REQUESTS, remote_hub, stop_and_see_the_job_end  # noqa: F401
from .untrusted_helpers import HostileProgram

pytestmark = [pytest.mark.sites, pytest.mark.slurm]
FLOODER = Path(__file__).with_name("flooder.py")
HUB_SIDE, ATTACKER = (
    "10.77.1.1",
    "10.77.1.3",
)  # hub-gateway, the hub's host on LUMI's network; another node's NAT address
GATEWAY_PORT = 2222
# the limits as the roles set them: tunnel_gateway_per_source_connections, workbench_hub_api_per_*
GATEWAY_PER_SOURCE, API_PER_SOURCE, API_PER_ACCOUNT = 256, 128, 32
HALF_A_REQUEST = r"GET /hub/api/ HTTP/1.1\r\nHost: hub\r\n"
LUMI_ATTACKER = "carollum"  # a LUMI user with no server of hers here
HOST_ATTACKER = "bob"  # a user of the hub's host (the demo's shared node)


@pytest.fixture
def attacker_address():
    added = subprocess.run(
        ["ip", "-n", "aifa-lumi", "addr", "add", f"{ATTACKER}/24", "dev", "eth0"], capture_output=True, text=True
    )
    assert added.returncode == 0 or "File exists" in added.stderr, added.stderr
    yield ATTACKER
    subprocess.run(["ip", "-n", "aifa-lumi", "addr", "del", f"{ATTACKER}/24", "dev", "eth0"], capture_output=True)


def flood(
    argv_prefix: list[str],
    host: str,
    port: int,
    count: int,
    source: str = "-",
    payload: str = "",
    python: str = "/usr/bin/python3",
) -> HostileProgram:
    program = HostileProgram(argv_prefix, FLOODER, host, str(port), str(count), source, payload, python=python)
    if not program.wait_ready(30):
        program.stop()
        pytest.fail(f"the flood of {host}:{port} did not start")
    return program


def flood_report(program: HostileProgram) -> dict:
    lines = program.stop()
    return json.loads(lines[-1]) if lines else {}


def from_lumi_as(user: str) -> list[str]:
    return site_argv("lumi", user)


def api_answers(hub, token: str, calls: int) -> list[float]:
    """`calls` requests of another user's, one after the other: seconds each; raises on any failure."""
    took = []
    for _ in range(calls):
        started = time.monotonic()
        r = hub.api("GET", "user", token=token, timeout=10)
        r.raise_for_status()
        took.append(time.monotonic() - started)
    return took


def test_a_lumi_user_flooding_the_tunnel_gateway_leaves_another_jobs_tunnel_alone(remote_hub, attacker_address):
    """Before: 220 unauthenticated connections filled sshd's MaxStartups and new tunnels failed."""
    hub, token = remote_hub, remote_hub.user_token("alice")
    attack = flood(from_lumi_as(LUMI_ATTACKER), HUB_SIDE, GATEWAY_PORT, 400, ATTACKER, python=SITE_PYTHON["lumi"])
    try:
        time.sleep(3)  # the flood holds what it can before alice asks
        started = time.monotonic()
        assert hub.api("POST", "users/alice/server", token=token, json=REQUESTS["lumi"]).status_code in (201, 202)
        model = wait_ready(hub, "alice", timeout=240)
        took = time.monotonic() - started
        assert answers_through_the_proxy(hub, token, timeout=10), "alice's LUMI server did not answer"
    finally:
        report = flood_report(attack)
    print(f"alice's LUMI spawn during the gateway flood: {took:.1f} s; the flood: {report}")
    assert report["attempts"] > 400 and report["most_held"] <= GATEWAY_PER_SOURCE, report
    stop_and_see_the_job_end(hub, token, "lumi", model["state"]["job_id"])


def test_half_sent_requests_from_a_lumi_address_and_a_local_account_hold_few_descriptors_for_seconds(
    remote_hub, attacker_address
):
    """Before: 2,000 half-sent requests were all held (descriptors 28 -> 1,876, for an hour each)."""
    hub, port = remote_hub, remote_hub.api_port
    token = hub.user_token("alice")
    api_answers(hub, token, 5)
    before = hub.open_descriptors()
    remote = flood(from_lumi_as(LUMI_ATTACKER), HUB_SIDE, port, 500, ATTACKER, HALF_A_REQUEST, SITE_PYTHON["lumi"])
    try:
        local = flood(["runuser", "-u", HOST_ATTACKER, "--"], "127.0.0.1", port, 500, "-", HALF_A_REQUEST)
    except BaseException:
        remote.stop()
        raise
    try:
        time.sleep(3)
        during = hub.open_descriptors()
        took = api_answers(hub, token, 30)  # through the proxy, as users call it
        direct = in_site(
            "lumi",
            ["runuser", "-u", "alicelum", "--", "curl", "-sSf", "-m", "10", f"http://hub-gateway:{port}/hub/api/"],
            timeout=30,
        )
        assert direct.returncode == 0, f"a job's call from LUMI's usual address failed: {direct.stderr}"
        time.sleep(FIRST_REQUEST_SECONDS + 5)  # the hub closes what sent half a request
    finally:
        remote_report, local_report = flood_report(remote), flood_report(local)
    print(
        f"hub descriptors {before} -> {during} during the floods; alice's API calls (N=30): "
        f"max {max(took) * 1000:.0f} ms; floods: LUMI {remote_report}, local {local_report}"
    )
    assert remote_report["most_held"] <= API_PER_SOURCE and local_report["most_held"] <= API_PER_ACCOUNT
    assert during - before <= API_PER_SOURCE + API_PER_ACCOUNT + 20, (before, during)
    assert remote_report["closed_by_peer"] >= 1 and local_report["closed_by_peer"] >= 1, "idle connections kept"
    assert requests.get(f"http://127.0.0.1:{port}/hub/api/", timeout=10).status_code == 200
