"""A course on a remote site: the simulated LUMI made a reservation for the trainer's project; the
course names it. A participant with a LUMI account in that project joins and starts the course's
card: the job runs on LUMI as her, in that reservation and project; someone whose LUMI account is
in another project cannot join; at the window's end her session stops and LUMI keeps its
reservation (the site's, not the hub's)."""

import time

import pytest
import yaml

from .hubs import server_model, wait_ready
from .sim_sites import SITE_USERS, SITES_ROOT, authorize_line, in_site
from .test_courses import course_state, wait_all_stopped
from .sim_sites import SIM_KEYS
from .test_remote_spawn import hub_cli

pytestmark = [pytest.mark.sites, pytest.mark.slurm, pytest.mark.courses]

RESERVATION = "lumi-ws-test"
CAROL_LUMI = "carollum"


@pytest.fixture(scope="module")
def lumi_course_hub(cluster):
    from . import hubs

    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    hub = hubs.running_hub(
        "rcourses",
        "/",
        {
            **{key: simulated[key] for key in SIM_KEYS},
            "courses": {"trainers": ["alice"], "guest_count": 40, "every_seconds": 3, "last_start_minutes": 0},
        },
    )
    authorize_line("lumi", SITE_USERS["lumi"]["alice"], hub_cli(hub, "user-key", "alice", "lumi"))
    authorize_line("lumi", CAROL_LUMI, hub_cli(hub, "user-key", "carol", "lumi"))
    authorize_line("lumi", SITE_USERS["lumi"]["bob"], hub_cli(hub, "user-key", "bob", "lumi"))
    authorize_line("lumi", simulated["runtime_owners"]["lumi"], hub_cli(hub, "runtime-key", "lumi"))
    in_site("lumi", ["scontrol", "delete", f"ReservationName={RESERVATION}"])  # a killed run's
    made = in_site(
        "lumi",
        [
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={RESERVATION}",
            "StartTime=now",
            "Duration=30",
            "Accounts=project_465000123",
            "PartitionName=small-g",
            "CoreCnt=8",
            "Flags=IGNORE_JOBS",
        ],
    )
    assert made.returncode == 0, made.stderr
    yield hub
    hubs.stop_servers(hub)
    hubs.stop_hub(hub)
    in_site("lumi", ["scontrol", "delete", f"ReservationName={RESERVATION}"])


def test_a_lumi_course_runs_its_sessions_in_the_reservation_the_site_made(lumi_course_hub):
    hub = lumi_course_hub
    alice = hub.user_token("alice")
    now = time.time()
    course = {
        "id": "lumi-ws",
        "title": "LLMs on LUMI",
        "site": "lumi",
        "partition": "small-g",
        "gpus": 1,
        "hours": 0.25,
        "starts_at": now - 60,
        "ends_at": now + 100,
        "size": 10,
        "project": "project_465000123",
    }
    r = hub.api("POST", "courses", token=alice, json={**course, "reservation": "no-such-reservation"}, timeout=120)
    assert r.status_code == 400 and "has no reservation no-such-reservation" in r.json()["message"], r.text
    r = hub.api(
        "POST", "courses", token=alice, json={**course, "reservation": RESERVATION, "instructors": ["bob"]}, timeout=120
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]

    refused = hub.api("POST", "courses/join", token=hub.user_token("bob"), json={"code": code})
    assert refused.status_code == 400 and "not in project project_465000123" in refused.json()["message"]
    carol = hub.user_token("carol")
    assert hub.api("POST", "courses/join", token=carol, json={"code": code}).status_code == 200
    r = hub.api("POST", "users/carol/servers/course-lumi-ws", token=carol, json={"course": "lumi-ws"}, timeout=120)
    assert r.status_code in (201, 202), r.text
    # and her own session beside it, on her own project's budget
    r = hub.api(
        "POST", "users/carol/server", token=carol, json={"site": "lumi", "partition": "small-g", "gpus": 1}, timeout=120
    )
    assert r.status_code in (201, 202), r.text
    job_id = wait_ready(hub, "carol", timeout=180, server_name="course-lumi-ws")["state"]["job_id"]
    own_job = wait_ready(hub, "carol", timeout=180)["state"]["job_id"]
    on_lumi = in_site("lumi", ["squeue", "-h", "-j", job_id, "-o", "%v|%a|%u"]).stdout.strip()
    assert on_lumi == f"{RESERVATION}|project_465000123|{CAROL_LUMI}", on_lumi

    # bob, the course's instructor, sees and may open her course session, and nothing else of hers
    bob = hub.user_token("bob")
    assert set(hub.api("GET", "users/carol", token=bob).json()["servers"]) == {"course-lumi-ws"}
    r = hub.api("POST", "users/bob/tokens", token=bob, json={"scopes": ["access:servers!server=carol/"]})
    assert r.status_code == 400 and "not held" in r.text, r.text
    r = hub.api(
        "POST",
        "users/bob/tokens",
        token=bob,
        json={"scopes": ["access:servers!server=carol/course-lumi-ws"], "expires_in": 600},
    )
    assert r.status_code == 201, r.text
    assert hub.api("DELETE", "users/carol/server", token=bob).status_code in (403, 404)
    assert server_model(hub, "carol").get("ready")

    wait_all_stopped(hub, ["carol"], timeout=max(now + 100 - time.time() + 60, 30), server="course-lumi-ws")
    deadline = time.monotonic() + 60
    while course_state(hub, "lumi-ws") != "ended" and time.monotonic() < deadline:
        time.sleep(2)
    assert course_state(hub, "lumi-ws") == "ended"
    assert RESERVATION in in_site("lumi", ["scontrol", "show", "reservation"]).stdout  # the site's, kept
    assert not server_model(hub, "carol", "course-lumi-ws")
    assert server_model(hub, "carol").get("ready"), "the course's end stopped her own session"
    assert hub.api("DELETE", "users/carol/server", token=carol).status_code in (202, 204)
    wait_all_stopped(hub, ["carol"], timeout=60)
    assert own_job
