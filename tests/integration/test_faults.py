"""The spawner under faults: a job cancelled behind the hub's back, a job that dies at once, a
pending spawn cancelled, Slurm not answering while servers run."""

import subprocess
import time
from pathlib import Path

import pytest

from .conftest import slurm_up
from .hubs import progress_events, server_model, wait_ready
from .jupyter_client_helpers import execute
from .slurm_helpers import job_state, wait_for_job_end
from .test_startup_errors import SLURMCTLD_PIDFILE

pytestmark = pytest.mark.slurm


def test_a_job_cancelled_behind_the_hubs_back_is_noticed_at_once(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu"})
    job_id = wait_ready(hub, "alice")["state"]["job_id"]
    cancelled = time.monotonic()
    subprocess.run(["scancel", job_id], check=True)
    deadline = cancelled + 20  # the queue poll alone would take up to 30 s: this is the job's own report
    while server_model(hub, "alice") and time.monotonic() < deadline:
        time.sleep(0.1)
    noticed = time.monotonic() - cancelled
    assert not server_model(hub, "alice"), hub.log_tail()
    print(f"scancel noticed after {noticed:.2f} s")


@pytest.fixture
def broken_venv():
    """A 'venv' whose server command prints an error and exits at once."""
    path = Path("/opt/aifa-workbench/test-broken-venv")
    (path / "bin").mkdir(parents=True, exist_ok=True)
    script = path / "bin" / "jupyterhub-singleuser"
    script.write_text("#!/bin/sh\necho 'ImportError: no module named jupyterhub (a broken environment)' >&2\nexit 3\n")
    script.chmod(0o755)
    return path


def test_a_job_that_dies_at_once_ends_the_spawn_with_its_reason_and_output(start_hub, broken_venv):
    hub = start_hub("dies", settings_overrides={"venv_dir": str(broken_venv)})
    token = hub.user_token("bob")
    started = time.monotonic()
    hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
    events = progress_events(hub, "bob", token, timeout=60)
    assert events[-1].get("failed"), events
    message = events[-1]["message"]
    assert "ended before JupyterLab started" in message and "a broken environment" in message, message
    assert time.monotonic() - started < 30  # not the 300 s start timeout
    assert not server_model(hub, "bob")


@pytest.fixture
def future_reservation():
    name = "tomorrow"
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)
    subprocess.run(
        [
            "scontrol",
            "create",
            "reservation",
            f"reservationname={name}",
            "users=carol",
            "starttime=now+2hours",
            "duration=30",
            "corecnt=4",
            "nodecnt=1",
            "partitionname=cpu",
        ],
        check=True,
        capture_output=True,
    )
    yield name
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)


def test_a_pending_spawn_shows_why_and_can_be_cancelled(hub, future_reservation):
    token = hub.user_token("carol")
    hub.api("POST", "users/carol/server", token=token, json={"partition": "cpu", "reservation": future_reservation})
    deadline = time.monotonic() + 30
    job_id = None
    while time.monotonic() < deadline and not job_id:
        job_id = server_model(hub, "carol").get("state", {}).get("job_id")
        time.sleep(0.2)
    events = []
    for event in progress_events(hub, "carol", token, timeout=5, stop_on=lambda e: "reservation" in e["message"]):
        events.append(event)
    assert any("waiting in the cpu queue: waiting for the reservation to start" in e["message"] for e in events), events
    assert job_state(job_id) == "PENDING"
    r = hub.api("DELETE", "users/carol/server", token=token)
    assert r.status_code in (202, 204)
    assert wait_for_job_end(job_id) in ("CANCELLED", "GONE")


def test_slurm_not_answering_keeps_running_servers(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu"})
    job_id = wait_ready(hub, "alice")["state"]["job_id"]
    subprocess.run(["kill", SLURMCTLD_PIDFILE.read_text().strip()], check=True)
    try:
        time.sleep(3)
        assert not slurm_up()
        # asking to start it again makes the hub poll the server now: it must not call it gone
        r = hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu"}, timeout=120)
        assert r.status_code == 400 and "already running" in r.text, r.text
        time.sleep(45)  # longer than the queue poll interval (30 s) + squeue giving up (~10 s)
        assert server_model(hub, "alice").get("ready")
        assert execute(hub.server_url("alice"), token, "6 * 7") == "42"
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
        for _ in range(100):
            if slurm_up():
                break
            time.sleep(0.2)
    assert job_state(job_id) == "RUNNING"
    assert server_model(hub, "alice").get("ready")
    log = hub.log_path.read_text()
    assert "Slurm did not answer" in log
    deadline = time.monotonic() + 10
    while "Slurm answers again" not in log and time.monotonic() < deadline:
        time.sleep(0.5)
        log = hub.log_path.read_text()
    assert "Slurm answers again" in log


def test_a_late_end_report_of_the_last_job_does_not_stop_the_next_server(hub):
    """Regression: the old job's end report arrived while the next spawn ran and stopped it."""
    token = hub.user_token("bob")
    old_jobs = []
    for _ in range(3):
        r = hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
        assert r.status_code in (201, 202), r.text
        old_jobs.append(wait_ready(hub, "bob")["state"]["job_id"])
        hub.api("DELETE", "users/bob/server", token=token)
        assert not server_model(hub, "bob")
    r = hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
    assert r.status_code in (201, 202), r.text
    model = wait_ready(hub, "bob")
    for job_id in old_jobs:  # a job sends its end report before it leaves Slurm (or is killed first)
        assert wait_for_job_end(job_id, timeout=90) not in ("RUNNING", "PENDING", "COMPLETING"), job_id
    settled = time.monotonic() + 5  # the hub acts on a report in the background, within a poll
    while time.monotonic() < settled:
        assert server_model(hub, "bob").get("ready") and server_model(hub, "bob")["state"] == model["state"]
        time.sleep(0.5)
