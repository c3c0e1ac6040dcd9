"""A demo user logs in, starts JupyterLab as a Slurm job, runs code in it, and stops it."""

import subprocess
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .hubs import login, wait_ready
from .jupyter_client_helpers import execute
from .slurm_helpers import job_fields, wait_for_job_end

pytestmark = pytest.mark.slurm


def squeue_ids(user: str) -> set[str]:
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i", f"--user={user}"], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("base_path", ["/", "/@/space%20word/"], ids=["root", "hostile-base-url"])
def test_user_logs_in_spawns_runs_code_and_stops(start_hub, base_path):
    hub = start_hub("spawn", base_path)
    session = login(hub, "alice")
    assert "alice" in session.get(hub.url + "hub/home", timeout=30).text

    token = hub.user_token("alice")
    r = hub.api("POST", "users/alice/server", token=token, json={"partition": "small-g", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    model = wait_ready(hub, "alice")

    job_id = model["state"]["job_id"]
    job = job_fields(job_id)
    assert job["JobState"] == "RUNNING"
    assert job["Partition"] == "small-g"
    assert job["UserId"].startswith("alice(")
    assert "gpu:1" in job.get("TresPerNode", "")

    server = hub.server_url("alice")
    status = requests.get(server + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200 and "started" in status.json()
    assert execute(server, token, "5 * 4") == "20"
    # the logged-in browser session reaches the same server through the proxy (OAuth hop)
    lab = session.get(server + "lab", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text

    r = hub.api("DELETE", "users/alice/server", token=token)
    assert r.status_code in (202, 204), r.text
    wait_for_job_end(job_id)
    assert job_id not in squeue_ids("alice")


def test_two_users_at_once_cannot_reach_each_other(hub):
    tokens = {u: hub.user_token(u) for u in ("alice", "bob")}
    threads = [
        threading.Thread(
            target=hub.api,
            args=("POST", f"users/{u}/server"),
            kwargs={"token": tokens[u], "json": {"partition": "gpu", "gpus": 1}},
        )
        for u in tokens
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    models = {u: wait_ready(hub, u) for u in tokens}
    assert models["alice"]["state"]["job_id"] != models["bob"]["state"]["job_id"]
    for user, token in tokens.items():
        assert execute(hub.server_url(user), token, f"'{user}' + '!'") == f"'{user}!'"

    # bob's token and bob's browser session get nothing of alice's server
    alice_server = hub.server_url("alice")
    r = requests.get(
        alice_server + "api/status",
        headers={"Authorization": f"token {tokens['bob']}"},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code in (302, 403), r.status_code
    bob = login(hub, "bob")
    r = bob.get(alice_server + "lab", timeout=30)
    assert r.status_code == 403, r.status_code
    assert "jupyter-config-data" not in r.text  # no JupyterLab page (its config script) of alice's


def test_a_jobs_token_serves_only_its_own_server(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu"})
    hub.api("POST", "users/bob/server", token=hub.user_token("bob"), json={"partition": "cpu"})
    wait_ready(hub, "alice")
    wait_ready(hub, "bob")
    job_token = execute(hub.server_url("alice"), token, "import os; os.environ['JUPYTERHUB_API_TOKEN']").strip("'")
    auth = {"Authorization": f"token {job_token}"}
    bob_server = hub.server_url("bob")
    assert requests.get(bob_server + "api/status", headers=auth, timeout=30, allow_redirects=False).status_code in (
        302,
        403,
    )
    assert hub.api("GET", "users", token=job_token).status_code == 403
    assert hub.api("POST", "users/bob/server", token=job_token).status_code == 403
    # the port callback: only while starting, only a port
    assert hub.api("POST", "job-report", token=job_token, json={"port": 1}).status_code == 409
    assert hub.api("POST", "job-report", token=hub.user_token("bob"), json={"port": 1}).status_code == 403


def test_bad_request_is_refused_and_submits_nothing(hub):
    token = hub.user_token("carol")
    before = squeue_ids("carol")
    for options, field in [
        ({"partition": "small-g\n#SBATCH --qos=admin"}, "partition"),
        ({"partition": "small-g", "gpus": 99}, "gpus"),
        ({"partition": "cpu", "command": "rm -rf ~"}, "command"),
        ({"partition": "cpu", "hours": "1; id"}, "hours"),
    ]:
        r = hub.api("POST", "users/carol/server", token=token, json=options)
        assert r.status_code == 400, (options, r.status_code, r.text)
        assert field in r.json()["message"]
    assert squeue_ids("carol") == before


def test_the_hubs_metrics_count_starts_and_refusals_for_a_metrics_token_alone(hub):
    """/hub/metrics (JupyterHub's, with the workbench's own figures) answers a token that may read
    metrics (the workbench-admin service's here), not a plain user's or nobody's; it names sites,
    partitions and reasons, never a user."""
    token = hub.user_token("carol")
    assert (
        hub.api("POST", "users/carol/server", token=token, json={"partition": "small-g", "hours": "x"}).status_code
        == 400
    )
    assert hub.api("POST", "users/carol/server", token=token, json={"partition": "small-g", "gpus": 1}).status_code in (
        201,
        202,
    )
    job_id = wait_ready(hub, "carol")["state"]["job_id"]
    assert hub.api("DELETE", "users/carol/server", token=token).status_code in (202, 204)
    wait_for_job_end(job_id)
    url = hub.url + "hub/metrics"
    assert requests.get(url, timeout=30, allow_redirects=False).status_code in (302, 403)
    user = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30, allow_redirects=False)
    assert user.status_code == 403
    answer = requests.get(url, headers={"Authorization": f"token {hub.admin_token}"}, timeout=30)  # the service's
    assert answer.status_code == 200 and "jupyterhub_running_servers" in answer.text
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name.startswith("aifa_workbench_")
    }

    def value(name, **labels):
        return values.get((name, tuple(sorted(labels.items()))), 0)

    assert value("aifa_workbench_spawn_refusals_total", reason="admission:request") >= 1, values
    assert value("aifa_workbench_queue_wait_seconds_count", site="local", partition="small-g", outcome="ran") >= 1
    assert value("aifa_workbench_spawn_phase_seconds_count", site="local", phase="server") >= 1, values
    assert value("aifa_workbench_job_ends_total", site="local", ending="stopped") >= 1, values
    assert not any(name in answer.text for name in ("alice", "bob", "carol"))
