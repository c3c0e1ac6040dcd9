"""An idle server gives its GPUs back: jupyterhub-idle-culler, run by the hub as a service, stops
it; the Slurm job ends, and the user's home page says it was stopped for being idle and that the
files are kept. A server in use beside it is not stopped."""

import time

import pytest
import requests

from .hubs import login, server_model, wait_ready
from .slurm_helpers import job_state, wait_for_job_end

pytestmark = pytest.mark.slurm

# short enough for a test; still three activity reports per timeout (the settings insist)
CULLER = {"enabled": True, "timeout_seconds": 15, "every_seconds": 3, "activity_interval_seconds": 5}


def test_the_culler_stops_an_idle_server_keeps_a_used_one_and_the_home_page_says_why(start_hub):
    hub = start_hub("culler", settings_overrides={"idle_culler": CULLER})
    session = login(hub, "carol")
    for user in ("carol", "alice"):
        r = hub.api("POST", f"users/{user}/server", token=hub.user_token(user), json={"partition": "cpu"})
        assert r.status_code in (201, 202), r.text
    idle_job = wait_ready(hub, "carol")["state"]["job_id"]
    used_job = wait_ready(hub, "alice")["state"]["job_id"]
    deadline = time.monotonic() + 90
    while server_model(hub, "carol") and time.monotonic() < deadline:
        # alice works: requests through the proxy, which the hub reads as activity
        requests.get(
            hub.server_url("alice") + "api/contents",
            timeout=10,
            headers={"Authorization": f"token {hub.user_token('alice')}"},
        )
        time.sleep(2)
    assert not server_model(hub, "carol"), f"not culled:\n{hub.log_tail()}"
    assert "Culling server carol" in (hub.home / "hub.log").read_text(errors="replace")
    assert server_model(hub, "alice").get("ready") and job_state(used_job) == "RUNNING"
    wait_for_job_end(idle_job)
    home = session.get(hub.url + "hub/home", timeout=30).text
    assert "Nobody used it for a while" in home and "Your files are kept in your home" in home
