"""A user of the hub's host who takes the port a remote server is reached on (issue 21, item 1):
the LUMI job's gateway port as it is granted, the gateway port after the job's tunnel dropped,
the tunnel daemon's port of a forward (Lucia's, as JUPITER's) across a daemon restart. In none of them does the
taker receive a byte (no token, no cookie): the hub proves whose socket an address is before it
sends anything (the kernel's uid), and the tunnels' firewall on this host lets no other account's
socket of those ranges complete a handshake. The victim's server is moved to a fresh port, or
stopped with a sentence."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .hubs import login, server_model, wait_ready
from .sim_sites import answers_through_the_proxy, heal, partition
from .test_remote_spawn import FORWARD_SITE, REQUESTS, remote_hub, site_job, stop_and_see_the_job_end  # noqa: F401
from .untrusted_helpers import HostileProgram, route_target, spawn_outcome

pytestmark = [pytest.mark.sites, pytest.mark.slurm]
GRANTS = Path("/var/lib/aifa-tunnel-grants")
SQUATTER = Path(__file__).with_name("squatter.py")
TAKER = "bob"  # a user of the hub's host (the demo's shared node), with no server of his own here


def Squatter(host: str, port: int) -> HostileProgram:
    """squatter.py as TAKER, binding host:port as soon as it can."""
    return HostileProgram(["runuser", "-u", TAKER, "--"], SQUATTER, host, str(port))


def as_taker(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", TAKER, "--", *argv], capture_output=True, text=True, timeout=30)


def handshake(port: int, timeout: float = 2) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout).close()
        return True
    except OSError:
        return False


def test_the_grants_are_not_for_users_to_read():
    assert GRANTS.is_dir()
    assert as_taker("ls", str(GRANTS)).returncode != 0
    assert as_taker("python3", "-c", f"import os; os.listdir({str(GRANTS)!r})").returncode != 0


def test_a_user_who_binds_a_lumi_servers_port_as_it_is_granted_gets_nothing_and_the_spawn_says_why(remote_hub):
    """The attack as it was reproduced: the taker sees the grant appear (here the test tells him,
    as the world-readable folder once did) and binds 127.0.0.1:<port> before the job's tunnel."""
    hub, token = remote_hub, remote_hub.user_token("alice")
    before = set(p.name for p in GRANTS.iterdir())
    outcome: dict = {}

    def ask_for_a_server():
        failed, message, _ = spawn_outcome(hub, "alice", token, REQUESTS["lumi"], timeout=240)
        outcome.update(failed=failed, message=message)

    spawn = threading.Thread(target=ask_for_a_server)
    spawn.start()
    deadline = time.monotonic() + 60
    while not (new := set(p.name for p in GRANTS.iterdir()) - before):
        assert time.monotonic() < deadline, "no gateway port was granted for alice's LUMI spawn"
        time.sleep(0.02)
    port = int(new.pop())
    squatter = Squatter("127.0.0.1", port)
    try:
        assert squatter.wait_ready(10), "the taker could not bind the granted port before the tunnel"
        spawn.join(timeout=300)
        assert outcome.get("failed"), outcome
        assert "could not be connected safely" in outcome["message"], outcome["message"]
        assert not handshake(port), "another account's socket on a gateway port completed a handshake"
    finally:
        report = squatter.stop()
    assert report == [], f"the taker received: {report}"
    assert not (GRANTS / str(port)).exists()
    assert not server_model(hub, "alice").get("ready")


def test_a_user_who_takes_a_lumi_servers_port_after_its_tunnel_dropped_gets_nothing_and_the_server_stops(remote_hub):
    hub, token = remote_hub, remote_hub.user_token("alice")
    assert hub.api("POST", "users/alice/server", token=token, json=REQUESTS["lumi"]).status_code in (201, 202)
    model = wait_ready(hub, "alice", timeout=180)
    job_id, port = model["state"]["job_id"], model["state"]["tunnel"]["port"]
    squatter = Squatter("127.0.0.1", port)  # waits until the gateway lets go of the port
    try:
        partition("lumi")  # the gateway's sshd gives up on the job's session within ~8 s
        try:
            assert squatter.wait_ready(30), "the gateway kept the port"
            answers_through_the_proxy(hub, token, timeout=2)  # alice's browser tries meanwhile
            deadline = time.monotonic() + 20
            while server_model(hub, "alice").get("ready"):
                assert time.monotonic() < deadline, "the server whose port was taken was not stopped"
                time.sleep(0.5)
        finally:
            heal("lumi")
        deadline = time.monotonic() + 90
        while hub.api("GET", "users/alice", token=token).json().get("servers"):
            assert time.monotonic() < deadline, "the server whose port was taken did not finish stopping"
            time.sleep(1)
    finally:
        report = squatter.stop()
        if server_model(hub, "alice").get("ready"):
            stop_and_see_the_job_end(hub, token, "lumi", job_id)
    assert report == [], f"the taker received: {report}"
    deadline = time.monotonic() + 60
    while site_job("lumi", job_id).get("state") in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, "the stopped server's job still runs on LUMI"
        time.sleep(1)
    page = login(hub, "alice").get(hub.url + "hub/sessions", timeout=30).text  # alice: an admin
    assert "took the place meant for it" in page


def test_a_user_who_holds_a_forwards_old_port_across_a_tunnel_daemon_restart_gets_nothing_and_the_route_moves(
    remote_hub,
):
    from . import hubs

    hub, token = remote_hub, remote_hub.user_token("alice")
    assert hub.api("POST", "users/alice/server", token=token, json=REQUESTS[FORWARD_SITE]).status_code in (201, 202)
    job_id = wait_ready(hub, "alice", timeout=180)["state"]["job_id"]
    squatter = None
    try:
        old_target = route_target(hub, "alice")
        old_port = int(old_target.rsplit(":", 1)[1].rstrip("/"))
        hub.tunneld_proc.send_signal(signal.SIGTERM)
        hub.tunneld_proc.wait(timeout=30)
        squatter = Squatter("127.0.0.1", old_port)
        assert squatter.wait_ready(10)
        assert not answers_through_the_proxy(hub, token, timeout=2)  # through the old route: nothing
        hubs.start_tunneld_process(hub)
        restarted = time.monotonic()
        while not answers_through_the_proxy(hub, token, timeout=1):
            assert time.monotonic() - restarted < 30, "the server was not reached on a fresh port"
            time.sleep(0.2)
        print(f"{FORWARD_SITE}: re-routed {time.monotonic() - restarted:.1f} s after the tunnel daemon restarted")
        new_target = route_target(hub, "alice")
        assert new_target != old_target and new_target.startswith("http://127.0.0.1:"), new_target
    finally:
        report = squatter.stop() if squatter else []
        stop_and_see_the_job_end(hub, token, FORWARD_SITE, job_id)
    assert report == [], f"the taker received: {report}"
