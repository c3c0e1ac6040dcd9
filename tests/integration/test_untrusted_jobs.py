"""Carol attacks through what her jobs do: a job name that forges squeue lines, output that is
gigabytes long, a port report naming alice's server. And server tokens live exactly as long as
their server, across a hub restart. Real Slurm, real hubs, real JupyterLab servers."""

import signal
import subprocess
import time

import pytest
import requests

from . import hubs
from .hubs import server_model, wait_ready, wait_until_up
from .jupyter_client_helpers import execute
from .slurm_helpers import job_state, wait_for_job_end
from .untrusted_helpers import own_jupyter_config, route_target, sbatch_as, spawn_outcome

pytestmark = pytest.mark.slurm


@pytest.fixture
def jobs_to_cancel():
    jobs = []
    yield jobs
    for job_id in jobs:
        subprocess.run(["scancel", job_id], check=False)


def test_a_job_name_forging_squeue_lines_makes_the_reconciler_cancel_no_one_elses_job(start_hub, jobs_to_cancel):
    hub_id = hubs.test_hub_id("forged")
    alices, bobs, carols_name = (f"aifa-wb-{hub_id}-{u}" for u in ("alice", "bob", "carol"))
    victim = sbatch_as("alice", "aifa-dask-alice")  # alice's Dask worker, say
    jobs_to_cancel.append(victim)
    forged_names = [
        f"x\n{victim}|{alices}|alice\ny",  # the line format of the reconciler before
        f"x\n{victim}|alice|{alices}\ny",  # and its format now
        alices,  # carol's job named as alice's server
        f"{carols_name}\n{victim}|alice|{alices}",
        f"x\n{victim}|alice|{alices}\n99|carol|z",
    ]  # only well-formed lines
    carols = [sbatch_as("carol", name) for name in forged_names]
    jobs_to_cancel.extend(carols)
    orphan = sbatch_as("bob", bobs)  # a real job of this hub no server owns
    others = sbatch_as("bob", "aifa-wb-otherhub-bob")  # a job of another hub on the same cluster
    jobs_to_cancel.extend([orphan, others])

    hub = start_hub("forged")  # reconciles once it has started
    assert wait_for_job_end(orphan, timeout=60) in ("CANCELLED", "GONE"), hub.log_tail()
    alive = ("PENDING", "RUNNING")  # not cancelled (on a busy node a job may still wait to start)
    assert job_state(victim) in alive, (job_state(victim), hub.log_tail())
    assert all(job_state(j) in alive for j in carols), [job_state(j) for j in carols]
    assert job_state(others) in alive
    assert "Reconciled Slurm on local with the hub: 1 unknown job(s) of this hub cancelled" in hub.log_path.read_text()


HUGE_OUTPUT_CONFIG = '''
import os
os.lseek(1, 0, os.SEEK_END)
os.ftruncate(1, os.lseek(1, 0, os.SEEK_CUR) + (1 << 30))    # a gigabyte of output (sparse)
os.lseek(1, 0, os.SEEK_END)
os.write(1, b"y" * 5_000_000 + b"\\n")                       # one line of 5 MB
os.write(1, b"z" * 1000 + b"\\n")
os.write(1, b"\\x1b[31mcarol's last words\\x1b[0m\\n")
raise SystemExit(3)                                          # dies before JupyterLab answers
'''


def test_a_job_writing_gigabytes_and_dying_costs_the_hub_a_bounded_tail(hub):
    token = hub.user_token("carol")
    log_size = hub.log_path.stat().st_size
    with own_jupyter_config("carol", HUGE_OUTPUT_CONFIG):
        failed, message, events = spawn_outcome(hub, "carol", token, {"partition": "cpu"})
    assert failed and "ended before JupyterLab started" in message, message
    assert "carol's last words" in message and "\x1b" not in message
    assert len(message) < 6000 and "z" * 300 + "… (700 more characters)" in message and "y" * 301 not in message
    assert all(len(e.get("message", "")) < 6000 for e in events)
    assert hub.log_path.stat().st_size - log_size < 100_000  # not the 5 MB line, three times over


def port_report_config(port: int) -> str:
    """Carol's server reports alice's port (with carol's own token) before it starts itself, then
    tries a second report (which could swap a checked port); it notes how that one was answered."""
    return f'''
import json, os, time, urllib.error, urllib.request
def report():
    request = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/job-report", method="POST",
        data=json.dumps({{"port": {port}}}).encode(), headers={{"Content-Type": "application/json",
        "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}})
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
report()
with open(os.path.expanduser("~/.jupyter/second-report"), "w") as f:
    f.write(str(report()))
time.sleep(30)
'''


def test_a_port_report_naming_another_users_server_is_not_routed(hub):
    alice_token, carol_token = hub.user_token("alice"), hub.user_token("carol")
    hub.api("POST", "users/alice/server", token=alice_token, json={"partition": "cpu"})
    wait_ready(hub, "alice")
    alice_port = int(route_target(hub, "alice").rsplit(":", 1)[1])
    with own_jupyter_config("carol", port_report_config(alice_port)) as files:
        failed, message, _ = spawn_outcome(hub, "carol", carol_token, {"partition": "cpu"})
        second = next(iter(files)).parent / "second-report"
        assert second.read_text() == "409"  # one report per start
        second.unlink()
    # the kernel says alice's uid holds that port: carol's server token is not even sent there
    assert failed and "could not be connected safely" in message, message
    assert route_target(hub, "carol") == ""
    assert "not sending it the server's token" in hub.log_path.read_text()
    deadline = time.monotonic() + 30  # the failed spawn's job is being cancelled
    while server_model(hub, "carol") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not server_model(hub, "carol") and route_target(hub, "carol") == ""
    # alice's server is untouched and still hers alone
    assert execute(hub.server_url("alice"), alice_token, "6 * 7") == "42"
    r = requests.get(
        hub.server_url("alice") + "api/status",
        headers={"Authorization": f"token {carol_token}"},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code in (302, 403)


def server_token_of(hub, username: str, token: str) -> str:
    return execute(hub.server_url(username), token, "import os; os.environ['JUPYTERHUB_API_TOKEN']").strip("'")


def token_works(hub, token: str) -> bool:
    return requests.get(hub.url + "hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30).ok


def test_a_server_token_lives_exactly_as_long_as_its_server_across_a_restart(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu", "hours": 2})
    job_id = wait_ready(hub, "alice")["state"]["job_id"]
    server_token = server_token_of(hub, "alice", token)
    assert token_works(hub, server_token)
    listed = hub.api("GET", "users/alice/tokens").json()["api_tokens"]
    expires = [t["expires_at"] for t in listed if t["note"].startswith("Server at")]
    assert expires and all(expires), listed  # it ends with the job's walltime at the latest

    hub.proc.send_signal(signal.SIGKILL)  # the hub forgets what it held in memory
    hub.proc.wait()
    hubs.start_hub_process(hub)
    wait_until_up(hub)
    assert server_model(hub, "alice").get("ready")

    cancelled = time.monotonic()
    subprocess.run(["scancel", job_id], check=True)  # behind the hub's back: the job reports its end
    while server_model(hub, "alice") and time.monotonic() - cancelled < 20:
        time.sleep(0.2)
    assert not server_model(hub, "alice"), hub.log_tail()  # the end report was accepted, not 403
    assert not token_works(hub, server_token)  # and the token ended with the server
    print(f"scancel after a hub restart noticed after {time.monotonic() - cancelled:.1f} s")


def test_a_stopped_servers_token_is_refused(hub):
    token = hub.user_token("bob")
    hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
    wait_ready(hub, "bob")
    server_token = server_token_of(hub, "bob", token)
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    hubs.start_hub_process(hub)
    wait_until_up(hub)
    assert hub.api("DELETE", "users/bob/server").status_code in (202, 204)
    deadline = time.monotonic() + 60
    while server_model(hub, "bob") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not token_works(hub, server_token)
