"""A workshop, as a trainer runs one on the local cluster: alice (a trainer, not an admin of the
course's people) makes a course; 20 participants without accounts here join with its code and
start their sessions at once; each job runs in the course's reservation and account as a guest
account of the pool; the materials are pulled into a participant's home; alice opens a
participant's notebook and runs a cell; an instructor of another course sees none of them; a
participant of a course over its budget is refused with a sentence; at the window's end every
server stops, the reservation goes, and the guest accounts are wiped."""

import concurrent.futures
import os
import pwd
import shutil
import subprocess
import time

import pytest
import requests

from .hubs import login, server_model
from .jupyter_client_helpers import execute
from . import walltime_guard_drill as walltime_guard
from .test_browser_login import browser, logged_in_page  # noqa: F401  (the fixture: Debian's chromium)
from .slurm_helpers import job_fields

pytestmark = [pytest.mark.slurm, pytest.mark.courses]

PARTICIPANTS = [f"ws-p{n:02d}" for n in range(1, 21)]
MATERIALS = "/var/tmp/aifa-test-materials/intro-llm.git"
WINDOW_SECONDS = 240


def make_materials() -> str:
    """A git repository with one notebook, readable by every guest account."""
    work = "/var/tmp/aifa-test-materials/work"
    subprocess.run(["rm", "-rf", "/var/tmp/aifa-test-materials"], check=True)
    os.makedirs(work)
    with open(f"{work}/welcome.ipynb", "w") as f:
        f.write('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", work]
    subprocess.run(["git", "init", "-q", "-b", "main", work], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "materials"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", work, MATERIALS], check=True)
    subprocess.run(["chmod", "-R", "a+rX", "/var/tmp/aifa-test-materials"], check=True)
    return f"file://{MATERIALS}"


def course_request(ident: str, **overrides) -> dict:
    now = time.time()
    return {
        "id": ident,
        "title": f"Intro to LLMs ({ident})",
        "site": "local",
        "partition": "cpu",
        "gpus": 0,
        "hours": 1,
        "starts_at": now - 60,
        "ends_at": now + WINDOW_SECONDS,
        "size": 25,
        "project": "proj_training",
        **overrides,
    }


@pytest.fixture(scope="module")
def course_hub(cluster):
    from .hubs import running_hub, stop_hub, stop_servers

    hub = running_hub(
        "courses",
        settings_overrides={
            "courses": {"trainers": ["alice"], "guest_count": 40, "every_seconds": 3, "last_start_minutes": 0},
            # servers report activity every 5 s: a course may stop its idle sessions after a minute
            "idle_culler": {"enabled": False, "activity_interval_seconds": 5},
        },
    )
    yield hub
    stop_servers(hub)
    for course in hub.api("GET", "courses", token=hub.user_token("alice")).json()["courses"]:
        if course["state"] != "ended":  # what a failed test left: the next run makes them again
            hub.api("POST", f"courses/{course['id']}/end", token=hub.user_token("alice"), timeout=300)
    stop_hub(hub)


def create_user(hub, name: str) -> str:
    r = hub.api("POST", f"users/{name}", token=hub.user_token("alice"))  # a hub admin makes users
    assert r.status_code in (201, 409), r.text
    return hub.user_token(name)


@pytest.mark.browser
def test_a_workshop_and_the_walltime_guard_each_to_the_end_of_its_clock_side_by_side(
    course_hub,
    start_hub,
    browser,  # noqa: F811
):
    """The suite's two drills that wait on a clock, about five minutes each (this course's window;
    a job's time limit in walltime_guard_drill), share nothing but the local cluster: they run
    together. The browser's drill keeps this thread (Playwright's sync API is bound to it); the
    workshop starts beside it once its notebook is open, so that 20 sessions starting at once do
    not slow the page the guard's clock is measured in."""
    with concurrent.futures.ThreadPoolExecutor(1) as beside:
        workshop = []
        try:
            walltime_guard.an_unsaved_edit_after_the_last_warning_is_on_disk_after_the_job_ends(
                start_hub, browser, once_open=lambda: workshop.append(beside.submit(a_workshop_to_its_end, course_hub))
            )
        finally:
            for drill in workshop:
                drill.result()  # its failure, if any, is raised (after the guard's, when both fail)


def a_workshop_to_its_end(hub) -> None:
    """From making the course to the end of its window (the drill)."""
    alice = hub.user_token("alice")
    # only trainers make courses
    r = hub.api("POST", "courses", token=hub.user_token("bob"), json=course_request("ws0"))
    assert r.status_code == 403
    r = hub.api(
        "POST",
        "courses",
        token=alice,
        json=course_request("ws1", materials_repo=make_materials(), materials_branch="main", instructors=["bob"]),
    )
    assert r.status_code == 201, r.text
    course = r.json()
    code = course["code"]
    assert course["join_url"].endswith(f"courses/join/{code.replace('-', '')}")
    res = subprocess.run(["scontrol", "show", "reservation", "aifa-ws1"], capture_output=True, text=True).stdout
    assert "Accounts=course-ws1" in res and "PartitionName=cpu" in res

    tokens = {name: create_user(hub, name) for name in PARTICIPANTS}
    r = hub.api("POST", "courses/join", token=tokens[PARTICIPANTS[0]], json={"code": "WRONG-CODE"})
    assert r.status_code == 400 and "No course has this code" in r.json()["message"]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        joined = list(
            pool.map(
                lambda n: hub.api("POST", "courses/join", token=tokens[n], json={"code": code.lower()}), PARTICIPANTS
            )
        )
    assert all(r.status_code == 200 for r in joined), [r.text for r in joined if r.status_code != 200]

    # everyone starts at once, in the course's locked profile
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        started = list(
            pool.map(
                lambda n: hub.api("POST", f"users/{n}/servers/course-ws1", token=tokens[n], json={"course": "ws1"}),
                PARTICIPANTS,
            )
        )
    assert all(r.status_code in (201, 202) for r in started), [r.text for r in started if r.status_code >= 300]
    models = wait_all_ready(hub, PARTICIPANTS, timeout=300, server="course-ws1")
    guests = set()
    for name, model in models.items():
        fields = job_fields(model["state"]["job_id"])
        assert fields["Reservation"] == "aifa-ws1" and fields["Account"] == "course-ws1", (name, fields)
        guest = fields["UserId"].split("(")[0]
        assert guest.startswith("aifa-guest"), fields["UserId"]
        guests.add(guest)
    assert len(guests) == len(PARTICIPANTS)  # one guest account per person

    first = PARTICIPANTS[0]
    # from a shell, as the participant's account: Slurm itself refuses the course's account for
    # anything but one session in its partition (another partition, GPUs, a second job)
    guest = job_fields(models[first]["state"]["job_id"])["UserId"].split("(")[0]
    for extra in (["-p", "small-g", "--gres=gpu:1"], ["-p", "cpu", "--gres=gpu:1"], ["-p", "cpu"]):
        by_hand = subprocess.run(
            [
                "runuser",
                "-u",
                guest,
                "--",
                "sbatch",
                "--parsable",
                "-A",
                "course-ws1",
                *extra,
                "-t",
                "10",
                "--wrap",
                "sleep 60",
            ],
            capture_output=True,
            text=True,
            cwd="/tmp",
        )
        assert by_hand.returncode != 0, (extra, by_hand.stdout)
        assert "sbatch: error" in by_hand.stderr, by_hand.stderr

    # the materials, pulled into the participant's home by nbgitpuller (git refuses a repository
    # another user owns: this on-machine one is made the participant's; courses use https ones)
    guest_home = f"/home/{job_fields(models[first]['state']['job_id'])['UserId'].split('(')[0]}"
    subprocess.run(["chown", "-R", guest_home.rsplit("/", 1)[1], MATERIALS], check=True)
    pulled = requests.get(
        hub.server_url(first, "course-ws1") + "git-pull/api",
        timeout=120,
        stream=True,
        headers={"Authorization": f"token {tokens[first]}"},
        params={"repo": f"file://{MATERIALS}", "branch": "main", "targetpath": "intro-llm"},
    )
    assert pulled.status_code == 200 and '"finished"' in pulled.text, pulled.text[-500:]
    assert os.path.exists(f"{guest_home}/intro-llm/welcome.ipynb")

    # an instructor (bob: no admin, no trainer) opens a participant's notebook and runs a cell there
    bob = hub.user_token("bob")
    # (a server resolves no group in a token's scopes: the hub makes bob a token for that server,
    # as its OAuth flow does when he opens it in a browser)
    r = hub.api(
        "POST",
        "users/bob/tokens",
        token=bob,
        json={
            "scopes": [f"access:servers!server={first}/course-ws1"],
            "expires_in": 600,
            "note": "open a participant's server",
        },
    )
    assert r.status_code == 201, r.text
    assert execute(hub.server_url(first, "course-ws1"), r.json()["token"], "6 * 7") == "42"
    r = hub.api("POST", "users/bob/tokens", token=bob, json={"scopes": ["access:servers!server=alice/"]})
    assert r.status_code == 400 and "not held" in r.text  # nobody outside his course
    r = hub.api("POST", "users/bob/tokens", token=bob, json={"scopes": [f"access:servers!server={first}/"]})
    assert r.status_code == 400 and "not held" in r.text  # nor a participant's own server
    visible = {u["name"] for u in hub.api("GET", "users", token=bob).json()}
    assert set(PARTICIPANTS) <= visible and not {"alice", "carol"} & visible, visible
    assert hub.api("DELETE", f"users/{PARTICIPANTS[1]}/servers/course-ws1", token=bob).status_code in (202, 204)
    wait_all_stopped(hub, [PARTICIPANTS[1]], timeout=60, server="course-ws1")  # and stop one

    # an instructor of another course sees none of this course's people, and cannot open them
    r = hub.api(
        "POST", "courses", token=alice, json=course_request("ws2", instructors=["carol"], idle_minutes=1, size=5)
    )
    assert r.status_code == 201, r.text
    carol = hub.user_token("carol")
    assert hub.api("GET", f"users/{first}", token=carol).status_code == 404
    r = requests.get(
        hub.server_url(first, "course-ws1") + "api/contents", timeout=30, headers={"Authorization": f"token {carol}"}
    )
    assert r.status_code == 403

    # a participant of another course cannot start this one's session
    outsider = create_user(hub, "ws-outsider")
    assert hub.api("POST", "courses/join", token=outsider, json={"code": r_code(hub, "ws2")}).status_code == 200
    r = hub.api("POST", "users/ws-outsider/servers/course-ws1", token=outsider, json={"course": "ws1"})
    assert r.status_code == 400 and "only for a course you joined" in r.json()["message"]
    # and the course's account serves its locked profile only
    r = hub.api("POST", "users/ws-outsider/server", token=outsider, json={"partition": "cpu", "account": "course-ws2"})
    assert r.status_code == 400 and "is a course's" in r.json()["message"], r.text

    # ws2 stops its sessions after a minute without use: the outsider's, started and left alone
    r = hub.api("POST", "users/ws-outsider/servers/course-ws2", token=outsider, json={})  # its name says which
    assert r.status_code in (201, 202), r.text
    idle_since = time.monotonic()

    # over the course's budget: refused, in words
    r = hub.api("POST", "courses", token=alice, json=course_request("ws3", budget=0.01, size=5))
    assert r.status_code == 201, r.text
    poor = create_user(hub, "ws-poor")
    assert hub.api("POST", "courses/join", token=poor, json={"code": r_code(hub, "ws3")}).status_code == 200
    r = hub.api("POST", "users/ws-poor/servers/course-ws3", token=poor, json={"course": "ws3"})
    assert r.status_code == 400
    assert "Project course-ws3 has" in r.json()["message"], r.json()["message"]

    wait_all_stopped(
        hub, ["ws-outsider"], timeout=max(60 + 30 - (time.monotonic() - idle_since), 10), server="course-ws2"
    )
    # ws2's instructor sees on the sessions page why it ended, and none of ws1's people
    page = login(hub, "carol").get(hub.url + "hub/sessions", timeout=30).text
    assert "ws-outsider" in page and "Nobody used it for a while" in page and first not in page
    assert server_model(hub, first, "course-ws1"), "the idle timeout of one course stopped another course's session"

    # what the first holder of a guest account leaves for the next one: setuid copies of a shell in
    # every place users may write, SysV IPC objects, a POSIX message queue, a crontab, and a loop
    # that forks while the course ends
    planted = plant_for_the_next_holder(guest)
    forker = subprocess.Popen(
        [
            "runuser",
            "-u",
            guest,
            "--",
            "prlimit",
            "--nproc=400",
            "sh",
            "-c",
            "while :; do sleep 600 & sleep 0.02; done",
        ],
        stderr=subprocess.DEVNULL,
    )

    # the window's end: every server of the course stops, and what it leaves is cleared
    wait_all_stopped(hub, PARTICIPANTS, timeout=max(r_end(hub, "ws1") - time.time() + 90, 60), server="course-ws1")
    deadline = time.monotonic() + 180  # then the participations end, each guest account wiped
    while course_state(hub, "ws1") != "ended" and time.monotonic() < deadline:
        time.sleep(2)
    assert course_state(hub, "ws1") == "ended", hub.log_tail(40)
    assert "aifa-ws1" not in subprocess.run(["scontrol", "show", "reservation"], capture_output=True, text=True).stdout
    assoc = subprocess.run(
        ["sacctmgr", "-nP", "show", "assoc", "account=course-ws1", "format=user"], capture_output=True, text=True
    ).stdout.split()
    assert not [u for u in assoc if u], assoc
    assert not os.path.exists(f"{guest_home}/intro-llm")
    forker.wait(timeout=30)  # killed by the release
    assert nothing_of(guest, planted) == [], "the guest account kept what its first holder left"
    page = login(hub, "alice").get(hub.url + "hub/sessions", timeout=30).text  # alice: an admin
    assert "Your course ended" in page
    home = requests.get(
        hub.url + "hub/api/users/" + first, timeout=30, headers={"Authorization": f"token {hub.admin_token}"}
    ).json()
    assert not home["servers"]


SETUID_PLACES = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm", "HOME")


def plant_for_the_next_holder(guest: str) -> list[str]:
    """As the guest: a setuid shell in each place, SysV shared memory, a queue and a semaphore set,
    a POSIX message queue and a crontab line (when cron is there); the paths planted."""
    home = f"/home/{guest}"
    places = [home if p == "HOME" else p for p in SETUID_PLACES]
    script = (
        "set -e; "
        + "; ".join(f"cp /bin/sh {p}/.aifa-sh && chmod 4755 {p}/.aifa-sh" for p in places)
        + "; ipcmk -M 4096 >/dev/null; ipcmk -Q >/dev/null; ipcmk -S 1 >/dev/null"
        "; python3 -c \"import os; os.close(os.open('/dev/mqueue/aifa-left', os.O_CREAT | os.O_RDWR, 0o600))\""
        "; if command -v crontab >/dev/null; then echo '* * * * * true' | crontab -; fi"
    )
    done = subprocess.run(["runuser", "-u", guest, "--", "sh", "-c", script], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    uid = pwd.getpwnam(guest).pw_uid
    assert any(f" {uid} " in line for line in open("/proc/sysvipc/shm").read().splitlines()[1:])
    planted = [f"{p}/.aifa-sh" for p in places] + ["/dev/mqueue/aifa-left"]
    assert all(os.path.exists(p) and os.stat(p).st_uid == uid for p in planted)
    return planted


def nothing_of(guest: str, planted: list[str]) -> list[str]:
    """What is left of the guest: its processes, its files outside the home made anew, its SysV
    IPC objects, its crontab."""
    uid = pwd.getpwnam(guest).pw_uid
    left = [p for p in planted if os.path.exists(p) and not p.startswith(f"/home/{guest}/")]
    left += [f"{p} (in the home)" for p in planted if p.startswith(f"/home/{guest}/") and os.path.exists(p)]
    if subprocess.run(["pgrep", "-U", str(uid)], capture_output=True).returncode == 0:
        left.append("processes")
    found = subprocess.run(
        ["find", "/tmp", "/var/tmp", "/run/lock", "/dev/shm", "/dev/mqueue", "-xdev", "-user", str(uid)],
        capture_output=True,
        text=True,
    ).stdout.split()
    left += found
    for table in ("shm", "sem", "msg"):
        rows = open(f"/proc/sysvipc/{table}").read().splitlines()
        header = rows[0].split()
        left += [f"sysv {table}" for row in rows[1:] if row.split()[header.index("uid")] == str(uid)]
    if shutil.which("crontab") and subprocess.run(["crontab", "-l", "-u", guest], capture_output=True).returncode == 0:
        left.append("crontab")
    return left


def r_code(hub, ident: str) -> str:
    listed = hub.api("GET", "courses", token=hub.user_token("alice")).json()["courses"]
    return next(c["code"] for c in listed if c["id"] == ident)


def course_state(hub, ident: str) -> str:
    listed = hub.api("GET", "courses", token=hub.user_token("alice")).json()["courses"]
    return next(c["state"] for c in listed if c["id"] == ident)


def r_end(hub, ident: str) -> float:
    listed = hub.api("GET", "courses", token=hub.user_token("alice")).json()["courses"]
    return next(c["ends_at"] for c in listed if c["id"] == ident)


def wait_all_ready(hub, names, timeout: float, server: str = "") -> dict:
    deadline, ready = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and len(ready) < len(names):
        for name in names:
            if name not in ready:
                model = server_model(hub, name, server)
                if model.get("ready"):
                    ready[name] = model
                elif not model:
                    raise AssertionError(f"{name}'s server stopped while starting:\n{hub.log_tail(80)}")
        time.sleep(1)
    assert len(ready) == len(names), f"{len(ready)} of {len(names)} ready:\n{hub.log_tail(60)}"
    return ready


def wait_all_stopped(hub, names, timeout: float, server: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(server_model(hub, name, server) for name in names):
            return
        time.sleep(2)
    raise AssertionError(f"servers still running after the window:\n{hub.log_tail(60)}")


def test_a_trainer_makes_a_course_from_the_command_line(course_hub):
    hub = course_hub
    env = {**os.environ, "AIFA_WORKBENCH_TOKEN": hub.user_token("alice")}
    cli = ["/opt/aifa-workbench/venv/bin/aifa-workbench", "course"]
    start, end = (
        time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 600)),
        time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 3600)),
    )
    made = subprocess.run(
        [
            *cli,
            "create",
            "--hub",
            hub.url,
            "--id",
            "cli-ws",
            "--title",
            "From a terminal",
            "--partition",
            "cpu",
            "--hours",
            "0.5",
            "--size",
            "3",
            "--project",
            "proj_training",
            "--start",
            start,
            "--end",
            end,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0 and "Course cli-ws is ready: code " in made.stdout, made.stderr
    assert "/hub/courses/join/" in made.stdout and hub.user_token("alice") not in made.stdout
    listed = subprocess.run([*cli, "list", "--hub", hub.url], env=env, capture_output=True, text=True, timeout=60)
    assert "cli-ws: From a terminal (scheduled)" in listed.stdout and "0/3 joined" in listed.stdout
    refused = subprocess.run(
        [
            *cli,
            "create",
            "--hub",
            hub.url,
            "--id",
            "cli-ws",
            "--title",
            "Again",
            "--partition",
            "cpu",
            "--project",
            "proj_training",
            "--start",
            start,
            "--end",
            end,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "exists already" in refused.stderr
    ended = subprocess.run(
        [*cli, "end", "--hub", hub.url, "cli-ws"], env=env, capture_output=True, text=True, timeout=120
    )
    assert ended.returncode == 0 and "has ended" in ended.stdout
    assert (
        "aifa-cli-ws" not in subprocess.run(["scontrol", "show", "reservation"], capture_output=True, text=True).stdout
    )


@pytest.mark.browser
def test_in_chromium_a_trainer_makes_a_course_a_participant_joins_by_its_link_and_it_ends(course_hub, browser):  # noqa: F811
    hub = course_hub
    trainer = logged_in_page(browser, hub, "alice")
    trainer.goto(hub.url + "hub/courses")
    fill = {
        "#aifa-c-title": "Hands-on in the browser",
        "#aifa-c-id": "page-ws",
        "#aifa-c-gpus": "0",
        "#aifa-c-hours": "0.5",
        "#aifa-c-size": "4",
        "#aifa-c-start": time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 120)),
        "#aifa-c-end": time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 1800)),
    }
    for selector, value in fill.items():
        trainer.fill(selector, value)
    trainer.select_option("#aifa-c-partition", "cpu")
    trainer.select_option("#aifa-c-project", "proj_training")
    trainer.get_by_role("button", name="Make the course").click()
    trainer.wait_for_load_state()
    assert "is ready. Its code is" in trainer.locator("#aifa-message").inner_text(timeout=60_000), trainer.content()[
        -3000:
    ]
    row = trainer.locator('tr[data-course="page-ws"]')
    link = row.locator("small").filter(has_text="/hub/courses/join/").inner_text().strip()
    participant = logged_in_page(browser, hub, "carol")  # she has an account here: she keeps it
    participant.goto(link)
    participant.get_by_role("button", name="Join the course").click()
    participant.wait_for_url("**/hub/spawn")
    participant.get_by_role("button", name="Start my course session").click()
    participant.wait_for_url("**/user/carol/course-page-ws/**", timeout=120_000)
    job = job_fields(server_model(hub, "carol", "course-page-ws")["state"]["job_id"])
    assert (job["Reservation"], job["Account"], job["UserId"].split("(")[0]) == (
        "aifa-page-ws",
        "course-page-ws",
        "carol",
    )
    trainer.reload()
    assert "1 of 4" in trainer.locator('tr[data-course="page-ws"]').inner_text()
    trainer.locator('tr[data-course="page-ws"]').get_by_role("button", name="End now").click()
    assert "has ended" in trainer.locator("#aifa-message").inner_text()
    wait_all_stopped(hub, ["carol"], timeout=60, server="course-page-ws")
    participant.goto(hub.url + "hub/home")
    assert "Your course ended" in participant.content()
