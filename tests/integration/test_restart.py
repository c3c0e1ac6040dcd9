"""Restarts lose nothing: the hub is killed with servers running and started again. Jobs keep
running, the proxy (on its own) keeps every route while the hub is away, every server is
reachable again, and a workbench job the hub does not know is logged and cancelled."""

import signal

import pytest
import requests

from . import hubs
from .hubs import server_model, wait_ready, wait_until_up
from .jupyter_client_helpers import execute
from .slurm_helpers import job_state, wait_for_job_end
from .untrusted_helpers import proxy_routes, sbatch_as

pytestmark = pytest.mark.slurm


def test_killing_and_restarting_the_hub_loses_no_server(hub):
    tokens = {u: hub.user_token(u) for u in ("alice", "bob")}
    for user, token in tokens.items():
        hub.api("POST", f"users/{user}/server", token=token, json={"partition": "cpu"})
    jobs = {u: wait_ready(hub, u)["state"]["job_id"] for u in tokens}
    routes_before = set(proxy_routes(hub))
    assert {"/alice.localhost/user/alice", "/bob.localhost/user/bob"} <= routes_before  # each on its own host
    status_url = hub.server_url("alice") + "api/status"
    alice = {"Authorization": f"token {tokens['alice']}"}
    assert requests.get(status_url, headers=alice, timeout=30).status_code == 200  # the server now knows the token

    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    orphan = sbatch_as("carol", hub.job_name("carol"))  # a job in this hub's name it never submitted
    # while the hub is away: jobs run, the proxy keeps the routes, servers answer tokens they know
    assert set(proxy_routes(hub)) == routes_before
    assert all(job_state(j) == "RUNNING" for j in jobs.values())
    assert requests.get(status_url, headers=alice, timeout=30).status_code == 200

    hubs.start_hub_process(hub)
    wait_until_up(hub)
    for user, token in tokens.items():
        model = server_model(hub, user)
        assert model.get("ready") and model["state"]["job_id"] == jobs[user], model
        assert model["state"]["site"] == "local"  # the queue monitor of the job's own site after a restart
        assert execute(hub.server_url(user), token, "5 * 4") == "20"
    assert {"/alice.localhost/user/alice", "/bob.localhost/user/bob"} <= set(proxy_routes(hub))
    assert wait_for_job_end(orphan, timeout=60) in ("CANCELLED", "GONE"), hub.log_tail()
    assert f"Job {orphan} of carol is a job of this hub no server owns" in hub.log_path.read_text()
    assert all(job_state(j) == "RUNNING" for j in jobs.values())


def test_stopping_the_hub_does_not_cancel_jobs(start_hub):
    hub = start_hub("stopkeeps")
    token = hub.user_token("carol")
    hub.api("POST", "users/carol/server", token=token, json={"partition": "cpu"})
    job_id = wait_ready(hub, "carol")["state"]["job_id"]
    hubs.stop_hub(hub)
    assert job_state(job_id) == "RUNNING"
    hubs.start_proxy_process(hub)
    hubs.start_hub_process(hub)
    wait_until_up(hub)
    assert server_model(hub, "carol").get("ready")
    assert execute(hub.server_url("carol"), token, "2 + 2") == "4"
