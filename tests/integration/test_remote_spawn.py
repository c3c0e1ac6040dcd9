"""From the hub outside the sites: a quick spawn on each simulated site starts JupyterLab as a
Slurm job of that site's user, in that site's namespace and cluster, with the site's runtime and
home; a kernel computes through the proxy; stop ends the job there."""

import ast
import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from .hubs import server_model, wait_ready
from .test_browser_login import browser  # noqa: F401  (the chromium fixture)
from .jupyter_client_helpers import Kernel, execute
from .sim_sites import (
    SIM_KEYS,
    SITE_ALL_NODES,
    SITE_NODES,
    SITE_USERS,
    SITES_ROOT,
    answers_through_the_proxy,
    authorize_line,
    bring_up,
    heal,
    in_site,
    kill_ssh_sessions,
    on_site_fs,
    partition,
    site_home,
    site_passwd,
    site_runtime,
    sites_cli,
)

pytestmark = [pytest.mark.sites, pytest.mark.slurm]
REQUESTS = {
    "lumi": {"site": "lumi", "partition": "small-g", "gpus": 1},
    "jupiter": {"site": "jupiter", "partition": "booster"},
    "lucia": {"site": "lucia", "partition": "gpu", "gpus": 1},
}


@pytest.fixture(scope="module")
def remote_hub(cluster):
    from . import hubs

    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    hub = hubs.running_hub("remote", "/", {key: simulated[key] for key in SIM_KEYS})
    for site in REQUESTS:  # alice gives the site the key the hub made for her (the site's portal)
        authorize_line(site, SITE_USERS[site]["alice"], hub_cli(hub, "user-key", "alice", site))
        # and the antenna the key of the runtime's owner, with which the hub checks the runtime
        authorize_line(site, simulated["runtime_owners"][site], hub_cli(hub, "runtime-key", site))
    yield hub
    hubs.stop_servers(hub)
    hubs.stop_hub(hub)


def hub_cli(hub, *args: str) -> str:
    """`aifa-workbench ARGS` as the hub's user, with this hub's settings."""
    result = sites_cli(*args, settings=hub.home / "workbench.yaml")
    result.check_returncode()
    return result.stdout


def site_job(site: str, job_id: str) -> dict:
    out = in_site(site, ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%u|%T|%N|%Z"]).stdout.strip()
    if not out:
        return {}
    user, state, node, workdir = out.split("|")
    return {"user": user, "state": state, "node": node, "workdir": workdir}


# the machine each site's kernels run on: JUPITER's is aarch64 (emulated here), as the real one's
MACHINES = {"lumi": "x86_64", "jupiter": "aarch64", "lucia": "x86_64"}
# JupyterLab's first start in an emulated aarch64 userland takes minutes, not seconds
START_TIMEOUT = {"jupiter": 600}


# (project folder, TORCH_HOME) of alice's default project: LUMI and JUPITER publish the project's
# folder and scratch (the catalogue's paths, found there at the start), Lucia none. The scratch is
# the project group's to write in (2770, as LUMI's), so PyTorch's cache stays in the home.
PROJECT_FOLDERS = {
    "lumi": ("/project/project_465000123", None),
    "jupiter": ("/e/project1/aifabe", None),
    "lucia": (None, None),
}


def quick_start_profile(site: str):
    """The site's quick-start card for the partition REQUESTS uses (the card an SME user would
    click)."""
    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.spawners.profiles import quick_start_profiles

    sites = load_catalogue(SITES_ROOT / "catalogue", [site])
    (profile,) = [p for p in quick_start_profiles(sites) if p.options["partition"] == REQUESTS[site]["partition"]]
    return profile


def run_starter_notebook(site: str, kernel, name: str = "01-welcome.ipynb") -> list:
    """Every code cell of the starter notebook, in order, in `kernel`: the first error stops it
    (the kernel's error is raised). The job copied it into the user's home on the site; the cells
    run are this release's (a copy there is never overwritten: an earlier start's stays as it was)."""
    assert on_site_fs(site, f"{site_home(site, 'alice')}/starter-notebooks/{name}").is_file()
    path = Path(__file__).resolve().parents[2] / "notebooks" / name
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    return [kernel.run("".join(cell["source"])) for cell in cells]


def run_dask_starter_notebooks(site: str, kernel) -> None:
    """03 and 04 top to bottom in one kernel; 03's cells that need Slurm ran (a cell whose need is
    missing is skipped, not failed): its workers computed the 40 files' features."""
    run_starter_notebook(site, kernel, "03-scale-out-with-dask.ipynb")
    assert kernel.run("len(results)") == "40"
    run_starter_notebook(site, kernel, "04-hyperparameter-sweep.ipynb")


def proves_the_session_from_outside(hub, token, site: str) -> None:
    """What an SME user's first minutes need, from the hub outside the site: a kernel computes
    through the proxy on the site's machine, the job panel answers and 01-welcome runs to its end."""
    url = hub.server_url("alice")
    status = requests.get(url + "workbench/job", headers={"Authorization": f"token {token}"}, timeout=60)
    assert status.status_code == 200 and status.json()["site"] == site, status.text
    with Kernel(url, token, timeout=300) as kernel:  # one kernel: each start is minutes on JUPITER
        assert kernel.run("5 * 4") == "20"
        assert kernel.run("import platform; platform.machine()") == repr(MACHINES[site])
        run_starter_notebook(site, kernel)


@pytest.mark.parametrize("site", list(REQUESTS))
def test_a_server_runs_as_the_sites_user_in_the_sites_cluster_works_inside_its_job_and_stops_there(remote_hub, site):
    hub, token = remote_hub, remote_hub.user_token("alice")
    profile = quick_start_profile(site)
    r = hub.api("POST", "users/alice/server", token=token, json={"profile": profile.slug})
    assert r.status_code in (201, 202), r.text
    model = wait_ready(hub, "alice", timeout=START_TIMEOUT.get(site, 180))
    job_id = model["state"]["job_id"]
    try:
        assert model["state"]["site"] == site
        on_site = site_job(site, job_id)
        home = site_home(site, "alice")
        assert on_site["node"] in SITE_ALL_NODES[site], on_site
        assert on_site == {
            "user": SITE_USERS[site]["alice"],
            "state": "RUNNING",
            "node": on_site["node"],
            "workdir": home,
        }, on_site
        proves_the_session_from_outside(hub, token, site)
        url = hub.server_url("alice")
        where = execute(url, token, "import os, sys; (os.environ['HOME'], sys.prefix.split('/')[-2:])")
        assert home in where
        # the project's folders the site has (read at this start, as alice), caches not on its scratch
        folders = execute(
            url, token, "import os; tuple(os.environ.get(v) for v in ('AIFA_WORKBENCH_PROJECT_DIR', 'TORCH_HOME'))"
        )
        assert folders == repr(PROJECT_FOLDERS[site]), folders
        if site in ("jupiter", "lucia"):  # forward reach: the job calls the hub over TLS (sites.hub_api_tls)
            seen = execute(
                url,
                token,
                "import os; (os.environ['JUPYTERHUB_API_URL'].split(':')[0], "
                "os.environ.get('SSL_CERT_FILE'), os.environ.get('AIFA_WORKBENCH_HUB_CA_PEM'))",
            )
            assert seen == "('https', None, None)"  # and its kernels keep the node's usual trust
        # the hub's SSH connection to the site dies (its sshd child, on the login node) mid-session:
        # the server does not notice, and the hub's next command (the stop) logs in again
        # (and, on forward-reach sites, the tunnel daemon's: it makes the forward again, same port)
        kill_ssh_sessions(site, "alice")
        killed = time.monotonic()
        while not answers_through_the_proxy(hub, token, timeout=1):
            assert time.monotonic() - killed < 15, "the server did not answer again after its connection was killed"
            time.sleep(0.1)
        print(f"{site}: answered again {time.monotonic() - killed:.1f} s after its SSH connections were killed")
        assert execute(url, token, "2 + 3") == "5"
        proves_the_job_from_inside(hub, token, site, job_id, profile.options["hours"])
        # who alice is on the site does not change under her running job; her projects may
        me = SITE_USERS[site]["alice"]
        moved = hub.api("PUT", "site-accounts/alice", json={site: {"username": me + "x", "accounts": []}})
        assert moved.status_code == 409 and f"(job {job_id}) as {me}; stop it first" in moved.json()["message"]
        kept = hub.api("PUT", "site-accounts/alice", json={site: {"username": me, "accounts": ["extra_project"]}})
        assert kept.status_code == 200 and kept.json()[site]["accounts"] == ["extra_project"]
        assert hub.api("DELETE", f"site-accounts/alice/{site}").status_code == 204  # the settings' again
    except BaseException:  # the next tests need alice's server stopped and her accounts as the settings say
        hub.api("DELETE", "users/alice/server", token=token)
        hub.api("DELETE", f"site-accounts/alice/{site}")
        raise
    stop_and_see_the_job_end(hub, token, site, job_id)


def stop_and_see_the_job_end(hub, token, site, job_id, user="alice"):
    assert hub.api("DELETE", f"users/{user}/server", token=token).status_code in (202, 204)
    deadline = time.monotonic() + 60
    while site_job(site, job_id).get("state") in ("RUNNING", "COMPLETING", "PENDING"):
        assert time.monotonic() < deadline, site_job(site, job_id)
        time.sleep(1)
    while server_model(hub, user).get("pending"):  # the hub's own stop ends too
        assert time.monotonic() < deadline + 30, server_model(hub, user)
        time.sleep(0.5)
    assert not server_model(hub, user).get("ready")


def test_lumis_container_environment_runs_jupyterlab_inside_its_image_from_the_runtime_made_there(remote_hub):
    hub, token = remote_hub, remote_hub.user_token("alice")
    request = {**REQUESTS["lumi"], "environment": "pytorch-container"}
    # a relay folder an earlier job left (Slurm killed its batch script before its last line)
    relays = on_site_fs("lumi", f"{site_home('lumi', 'alice')}/.aifa-workbench")
    uid = int(site_passwd("lumi", "alice")[2])
    left = relays / "slurm-relay-lumi-1-leftover"
    another_clusters = relays / "slurm-relay-elsewhere-1-leftover"  # a home shared with another cluster's jobs
    for folder in (relays, left, left / "bin", another_clusters):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, uid, uid)
    assert hub.api("POST", "users/alice/server", token=token, json=request).status_code in (201, 202)
    job_id = wait_ready(hub, "alice", timeout=180)["state"]["job_id"]
    try:
        url = hub.server_url("alice")
        asked = "import os, sys; (os.environ.get('SINGULARITY_CONTAINER'), sys.prefix, os.environ.get('LOADEDMODULES'))"
        image, prefix, modules = ast.literal_eval(execute(url, token, asked))
        assert image.endswith(".sif") and "latest" not in image  # the catalogue's dated image
        assert prefix.startswith(f"{site_runtime('lumi')}/envs/pytorch-container/"), prefix
        assert execute(url, token, "5 * 4") == "20"
        # the site's Lmod ran the environment's lines: after `module purge`, the bindings alone
        assert modules == "lumi-aif-singularity-bindings", modules
        proves_the_session_from_outside(hub, token, "lumi")
        # the image holds no Slurm commands (Slurm runs outside LUMI's images): the job's relay runs
        # the node's for the notebook, so squeue answers and a Dask preset's worker job starts from
        # the image, runs in it (its Python, not the node's) and computes for a Client
        with Kernel(url, token, timeout=300) as kernel:
            seen = kernel.run(
                "import os, subprocess\nsubprocess.run(['squeue', '-h', '-j', os.environ['SLURM_JOB_ID'], "
                "'-o', '%i|%T'], capture_output=True, text=True, timeout=60).stdout.strip()"
            )
            assert ast.literal_eval(seen) == f"{job_id}|RUNNING", seen
            out = kernel.run(
                "import sys, time, workbench\ncluster = workbench.dask_cluster('gpu-workers', workers=1)\n"
                "deadline = time.monotonic() + 180\n"
                "while not cluster.scheduler_info.get('workers') and time.monotonic() < deadline:\n"
                "    time.sleep(0.5)\n"
                "from distributed import Client\nclient = Client(cluster)\n"
                "(sum(client.gather(client.map(lambda x: x * x, range(10)))), "
                "sorted(set(client.run(lambda: sys.version_info[:2]).values())), tuple(sys.version_info[:2]))"
            )
            total, worker_pythons, kernel_python = ast.literal_eval(out)
            assert total == 285 and worker_pythons == [kernel_python] and kernel_python != (3, 11), out
            assert len(site_dask_workers("lumi")) == 1
            kernel.run("client.close()\ncluster.close()")
        deadline = time.monotonic() + 60
        while site_dask_workers("lumi"):
            assert time.monotonic() < deadline, site_dask_workers("lumi")
            time.sleep(1)
        # and the starter notebooks that use Dask run top to bottom there with their workers
        with Kernel(url, token, timeout=300) as kernel:
            run_dask_starter_notebooks("lumi", kernel)
        assert list(relays.glob(f"slurm-relay-lumi-{job_id}-*")), "the job's relay folder is where the job said"
        assert not left.exists(), "this job's relay removes the folder of a job Slurm no longer runs"
        assert another_clusters.is_dir(), "a folder of another cluster's job is not this Slurm's to judge"
        another_clusters.rmdir()
    finally:
        stop_and_see_the_job_end(hub, token, "lumi", job_id)
    relays = on_site_fs("lumi", f"{site_home('lumi', 'alice')}/.aifa-workbench")
    assert not list(relays.glob(f"slurm-relay-lumi-{job_id}-*")), "the job removes its relay's folder when it ends"


def user_key_line(hub, user: str, site: str) -> str:
    return hub_cli(hub, "user-key", user, site).strip()


@pytest.mark.browser
def test_the_keys_page_shows_each_sites_key_and_tests_the_connection(remote_hub, browser):
    from playwright.sync_api import expect

    from .test_browser_login import logged_in_page

    hub = remote_hub
    page = logged_in_page(browser, hub, "alice")
    page.goto(hub.url + "hub/site-keys")
    for site in REQUESTS:  # the line the page shows is the one the site got (its portal)
        expect(page.locator(f"#key-{site}")).to_have_value(user_key_line(hub, "alice", site))
    assert page.locator("#key-jupiter").input_value().startswith('from="10.77.1.1,10.77.2.1,10.77.3.1" ssh-ed25519 ')
    expect(page.locator("#site-lumi")).to_contain_text("MyAccessID")
    page.click("#site-lucia button.aifa-test")
    expect(page.locator("#result-lucia")).to_have_text(
        re.compile(r"logged in to .* as acolin and Slurm answered\."), timeout=30000
    )
    carol = logged_in_page(browser, hub, "carol")  # the site never got carol's key
    carol.goto(hub.url + "hub/site-keys")
    carol.click("#site-lucia button.aifa-test")
    expect(carol.locator("#result-lucia")).to_contain_text(
        "refused the workbench's login for your account", timeout=30000
    )


def test_a_refused_key_fails_the_spawn_at_once_naming_the_keys_page(remote_hub):
    hub, token = remote_hub, remote_hub.user_token("carol")
    started = time.monotonic()
    r = hub.api("POST", "users/carol/server", token=token, json=REQUESTS["lumi"])
    if r.status_code == 202:
        from .hubs import progress_events

        message = progress_events(hub, "carol", token, timeout=60)[-1]["message"]
    else:
        message = r.json()["message"]
    assert "refused the workbench's login for your account" in message and "/hub/site-keys" in message, message
    assert time.monotonic() - started < 20
    assert not server_model(hub, "carol").get("ready")


def test_a_hub_restart_keeps_a_remote_server_and_a_stopped_login_node_keeps_it_too(remote_hub):

    hub, token = remote_hub, remote_hub.user_token("alice")
    assert hub.api("POST", "users/alice/server", token=token, json=REQUESTS["lumi"]).status_code in (201, 202)
    job_id = wait_ready(hub, "alice", timeout=180)["state"]["job_id"]
    url = hub.server_url("alice")
    try:
        restart_keeps_the_server(hub, token, job_id, url)
    finally:
        in_site("lumi", ["scancel", job_id])
        with contextlib.suppress(Exception):  # the hub's record too, or the next tests find alice running
            hub.api("DELETE", "users/alice/server", token=token)


def restart_keeps_the_server(hub, token, job_id, url):
    import signal

    from . import hubs
    from .hubs import wait_until_up

    hub.proc.send_signal(signal.SIGTERM)  # the hub alone: the proxy and the job stay
    hub.proc.wait(timeout=30)
    hubs.start_hub_process(hub)
    wait_until_up(hub)
    says_each_sites_runtime_is_this_hubs(hub)
    model = server_model(hub, "alice")
    assert model.get("ready") and model["state"]["job_id"] == job_id, model
    assert execute(url, token, "6 * 7") == "42"
    sshd_pid = SITES_ROOT / "lumi" / "root" / "run" / "aifa" / "sshd.pid"
    subprocess.run(["kill", sshd_pid.read_text().strip()], check=True)  # LUMI's login node goes away
    stopped = time.monotonic()
    subprocess.run(["pkill", "-KILL", "-f", "^sshd(-session)?: alicelum"])  # with the hub's connection to it
    try:
        bob = hub.user_token("bob")
        r = hub.api("POST", "users/bob/server", token=bob, json=REQUESTS["lumi"])
        message = (
            r.json().get("message", "")
            if r.status_code != 202
            else hubs.progress_events(hub, "bob", bob, timeout=60)[-1]["message"]
        )
        assert "cannot be reached right now" in message, message
        time.sleep(max(0.0, stopped + 60 - time.monotonic()))  # a minute without the login node
        assert server_model(hub, "alice").get("ready")
        assert execute(url, token, "2 + 2") == "4"  # reverse reach: the server never depends on the login node
    finally:
        bring_up("lumi")
    in_site("lumi", ["scancel", job_id])  # ended on the site, behind the hub's back:
    # its end report reaches the restarted hub, which confirms it with Slurm through the login
    # node: at the latest once the pause after the last failed login (30 s at most) is over
    deadline = time.monotonic() + 45
    while server_model(hub, "alice").get("ready"):
        assert time.monotonic() < deadline, "the hub did not notice the job's end"
        time.sleep(0.5)
    spawns_again_once_the_login_node_is_back(hub, token)


def says_each_sites_runtime_is_this_hubs(hub):
    """A starting hub checks each remote site's job runtime (as the runtime's owner) in its log."""
    deadline = time.monotonic() + 30
    while True:
        said = [line for line in hub.log_path.read_text(errors="replace").splitlines() if "this hub's is" in line]
        if len(said) >= len(REQUESTS):
            break
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.5)
    assert not any("refused until" in line for line in said), said
    assert any("pytorch-container: runtime" in line for line in said), said  # checked inside its image


def spawns_again_once_the_login_node_is_back(hub, token):
    """Nobody repairs anything: within the hub's longest pause between logins (30 s) a spawn works."""
    from .hubs import progress_events

    deadline = time.monotonic() + 45
    while True:
        r = hub.api("POST", "users/alice/server", token=token, json=REQUESTS["lumi"])
        failure = r.json().get("message", "") if r.status_code not in (201, 202) else ""
        if r.status_code == 202:
            last = progress_events(hub, "alice", token, timeout=180)[-1]
            failure = "" if last.get("ready") else last.get("message", "")
        if not failure:
            break
        assert "cannot be reached right now" in failure and time.monotonic() < deadline, failure
        time.sleep(5)
    job_id = wait_ready(hub, "alice", timeout=180)["state"]["job_id"]
    stop_and_see_the_job_end(hub, token, "lumi", job_id)


HOSTILE = [
    {"partition": "small-g\n#SBATCH --qos=admin"},
    {"account": "project_465000123;id"},
    {"gpus": "1e3"},
    {"reservation": "../../etc"},
    {"environment": "$(id)"},
    {"exec_prefix": "sh"},
]


@pytest.mark.parametrize("site", list(REQUESTS))
def test_hostile_spawn_options_are_refused_for_every_site_and_submit_nothing(remote_hub, site):
    hub, token = remote_hub, remote_hub.user_token("alice")
    before = in_site(site, ["squeue", "-h", "-o", "%i"]).stdout.split()
    for hostile in HOSTILE:
        r = hub.api("POST", "users/alice/server", token=token, json={**REQUESTS[site], **hostile})
        assert r.status_code == 400, (hostile, r.status_code, r.text)
        assert len(r.json()["message"]) < 400
    assert in_site(site, ["squeue", "-h", "-o", "%i"]).stdout.split() == before


def test_lumis_billing_file_is_the_projects_budget_in_the_form_and_at_the_spawn(remote_hub):
    """LUMI publishes each project's allocation in a file (what lumi-allocations shows): read there
    as the user, shown in the spawn form, and a request over what is left is refused in words."""
    hub, token = remote_hub, remote_hub.user_token("alice")
    billing = on_site_fs("lumi", "/var/lib/project_info/users/project_465000123/project_465000123.json")
    kept = billing.read_text()
    data = json.loads(kept)
    data["billing"]["gpu_hours"].update(alloc=10, used=9.8)
    billing.write_text(json.dumps(data))
    try:
        before = in_site("lumi", ["squeue", "-h", "-o", "%i"]).stdout.split()
        r = hub.api(
            "POST",
            "users/alice/server",
            token=token,
            json={**REQUESTS["lumi"], "gpus": 2, "hours": 1, "account": "project_465000123"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["message"].startswith(
            "Project project_465000123 has 0.2 GPU-hours left, and this session would use up to 1 GPU-hours."
        )
        assert in_site("lumi", ["squeue", "-h", "-o", "%i"]).stdout.split() == before
        from .hubs import login

        form = login(hub, "alice").get(hub.url + "hub/spawn", timeout=60).text
        assert "0.2 of 10 GPU-hours left in project_465000123" in form
    finally:
        billing.write_text(kept)


# Lucia stands for the sites whose servers the tunnel daemon's forward reaches (JUPITER too): the
# behaviour is the daemon's, and JUPITER's emulated aarch64 would add minutes to each start.
FORWARD_SITE = "lucia"


# one server on each at once, bob's on the forward site: the two drills wait on the same clock
PARTITIONED = {"lumi": "alice", FORWARD_SITE: "bob"}


def test_a_partition_between_hub_and_sites_keeps_their_servers_which_answer_again_once_it_heals(remote_hub):
    """30 s without any packet between the hub's side and LUMI and Lucia, side by side: neither
    server can be reached, nothing is stopped, and each tunnel is back soon after the network
    heals (LUMI: the job's own reconnect loop, the gateway's stale listener gone by then; Lucia
    and JUPITER: the tunnel daemon's)."""
    hub = remote_hub
    tokens = {user: hub.user_token(user) for user in PARTITIONED.values()}
    jobs = {}
    try:
        for site, user in PARTITIONED.items():
            authorize_line(site, SITE_USERS[site][user], hub_cli(hub, "user-key", user, site))
            r = hub.api("POST", f"users/{user}/server", token=tokens[user], json=REQUESTS[site])
            assert r.status_code in (201, 202), r.text
        for site, user in PARTITIONED.items():
            jobs[site] = wait_ready(hub, user, timeout=180)["state"]["job_id"]
            assert answers_through_the_proxy(hub, tokens[user], user=user), site
        try:
            for site in PARTITIONED:
                partition(site)
            time.sleep(10)
            for site, user in PARTITIONED.items():
                assert not answers_through_the_proxy(hub, tokens[user], user=user), site
            time.sleep(20)
        finally:
            for site in PARTITIONED:
                heal(site)
        healed = time.monotonic()
        for site, user in PARTITIONED.items():
            while not answers_through_the_proxy(hub, tokens[user], timeout=1, user=user):
                assert time.monotonic() - healed < 30, f"{site}: the server did not answer again within 30 s of healing"
                time.sleep(0.1)
            print(f"{site}: the server answered {time.monotonic() - healed:.1f} s after the partition healed")
            assert server_model(hub, user).get("ready")
            assert site_job(site, jobs[site])["state"] == "RUNNING"
            assert execute(hub.server_url(user), tokens[user], "5 * 4") == "20"
    finally:
        for site, user in PARTITIONED.items():
            if site in jobs:
                stop_and_see_the_job_end(hub, tokens[user], site, jobs[site], user=user)
            else:
                hub.api("DELETE", f"users/{user}/server", token=tokens[user])


def test_a_tunnel_daemon_restart_makes_its_forwards_again_and_a_hub_restart_touches_none(remote_hub):
    """A server reached through the tunnel daemon's forward (Lucia, JUPITER): the hub restarting
    leaves it alone; the daemon restarting makes it again from its database, on the same local port."""
    import signal

    from . import hubs

    hub, token = remote_hub, remote_hub.user_token("alice")
    assert hub.api("POST", "users/alice/server", token=token, json=REQUESTS[FORWARD_SITE]).status_code in (201, 202)
    job_id = wait_ready(hub, "alice", timeout=180)["state"]["job_id"]
    try:
        daemon = hub.tunneld_proc
        own = forward_ids(hub)
        assert len(own) == 1 and own[0].endswith(f".{job_id}")
        # a forward no server owns (the hub crashed between opening it and recording its job)
        tunnel_daemon(
            hub,
            {
                "op": "open",
                "id": "alice/ghost.999999",
                "site": FORWARD_SITE,
                "user": "alice",
                "host": SITE_NODES[FORWARD_SITE],
                "port": 22,
            },
        )
        hub.proc.send_signal(signal.SIGTERM)
        hub.proc.wait(timeout=30)
        hubs.start_hub_process(hub)
        hubs.wait_until_up(hub)
        assert daemon.poll() is None and hub.tunneld_proc is daemon  # the hub's restart left it alone
        assert answers_through_the_proxy(hub, token)
        deadline = time.monotonic() + 30  # the reconciler's first round closes the stray one
        while forward_ids(hub) != own:
            assert time.monotonic() < deadline, forward_ids(hub)
            time.sleep(0.5)
        hub.tunneld_proc.send_signal(signal.SIGTERM)
        hub.tunneld_proc.wait(timeout=30)
        stopped = time.monotonic()
        assert not answers_through_the_proxy(hub, token, timeout=1)
        hubs.start_tunneld_process(hub)
        while not answers_through_the_proxy(hub, token, timeout=1):
            assert time.monotonic() - stopped < 30, "the tunnel daemon did not make the forward again"
            time.sleep(0.1)
        print(
            f"{FORWARD_SITE}: the server answered {time.monotonic() - stopped:.1f} s after the tunnel daemon stopped "
            "(restarted at once)"
        )
        assert server_model(hub, "alice").get("ready")
        assert execute(hub.server_url("alice"), token, "5 * 4") == "20"
    finally:
        stop_and_see_the_job_end(hub, token, FORWARD_SITE, job_id)
    deadline = time.monotonic() + 10  # no tunnel outlives its server
    while forward_ids(hub):
        assert time.monotonic() < deadline, forward_ids(hub)
        time.sleep(0.2)


def tunnel_daemon(hub, request: dict) -> dict:
    import asyncio

    from aifa_workbench.sites.tunnel_client import ask

    return asyncio.run(ask(str(hub.home / "tunneld.sock"), request))


def forward_ids(hub) -> list[str]:
    return sorted(f["id"] for f in tunnel_daemon(hub, {"op": "list"})["forwards"])


# JUPITER's one preset wants a whole booster node per worker: the notebook holds one of the
# simulated JUPITER's four, each worker another.
DASK_PRESETS = {"lumi": "gpu-workers", "lucia": "gpu-workers", "jupiter": "gpu-node-workers"}
DASK_WORKERS = {"lumi": 2, "lucia": 2, "jupiter": 1}
# Where 03 and 04 also run top to bottom with their Dask workers, on the site's own presets (LUMI's
# container test runs them too, through the job's Slurm relay; on JUPITER, 04's trials need
# PyTorch, which its stage lacks, and its first cell says so).
DASK_NOTEBOOK_SITES = ("lucia", "jupiter")


def site_dask_workers(site: str, fields: str = "%i|%P|%T") -> list[str]:
    name = f"aifa-dask-{SITE_USERS[site]['alice']}"
    out = in_site(site, ["squeue", "-h", "-n", name, "-o", fields]).stdout
    return out.split()


def proves_the_job_from_inside(hub, token, site: str, job_id: str, hours: float) -> None:
    """In the same session: the job panel, the walltime guard's source and `srun` from a notebook
    see the job as Slurm has it, and a Dask preset starts workers through the site's reach (and
    the notebook's kernel reaches them)."""
    url = hub.server_url("alice")
    try:
        status = requests.get(url + "workbench/job", headers={"Authorization": f"token {token}"}, timeout=30).json()
        assert (status["site"], status["partition"]) == (site, REQUESTS[site]["partition"]), status
        assert status["node"] in SITE_ALL_NODES[site], status
        assert 0 < status["seconds_left"] <= hours * 3600 and status["warn_minutes"] == [10, 2]  # what the guard reads
        with Kernel(url, token, timeout=240) as kernel:
            html = kernel.run(
                "import workbench\nfrom aifa_workbench.extensions.panel import render_html\n"
                "render_html(workbench.job_status())"
            )
            assert REQUESTS[site]["partition"] in html and job_id in html
            # srun from the notebook keeps the job's environment and cores: the job was submitted
            # with --export=NONE, which every srun would inherit without SLURM_EXPORT_ENV=ALL, and
            # Slurm >= 22.05 gives a step one core, not the job's --cpus-per-task, without SRUN_CPUS_PER_TASK
            step, job_env = ast.literal_eval(
                kernel.run(
                    "import os, subprocess\n"
                    "step = subprocess.run(['srun', '--overlap', '-n1', 'bash', '-c', "
                    "'echo \"site=$AIFA_WORKBENCH_SITE\"; scontrol show step \"$SLURM_JOB_ID.$SLURM_STEP_ID\"'], "
                    "capture_output=True, text=True, timeout=120)\n"
                    "(step.stdout + step.stderr[-300:], "
                    "{k: os.environ.get(k) for k in ('SLURM_CPUS_PER_TASK', 'XDG_RUNTIME_DIR', 'CUDA_VISIBLE_DEVICES')})"
                )
            )
            assert step.startswith(f"site={site}\n") and job_env["XDG_RUNTIME_DIR"] is None, (step, job_env)
            assert re.search(r"\bCPUs=(\d+)", step).group(1) == job_env["SLURM_CPUS_PER_TASK"], (step, job_env)
            if site == "jupiter":  # one task sees every GPU of the node (JSC's GPU page)
                assert job_env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3", job_env
            if site == "lumi":  # the project's billing file, read there by the job itself
                assert re.search(r"[0-9.]+ of 5000 GPU-hours left in project_465000123", html), html
            wanted = DASK_WORKERS[site]
            joined = kernel.run(
                "import json, time\n"
                f"cluster = workbench.dask_cluster({DASK_PRESETS[site]!r}, workers={wanted})\n"
                "deadline = time.monotonic() + 180\n"
                f"while len(cluster.scheduler_info.get('workers', {{}})) < {wanted} and time.monotonic() < deadline:\n"
                "    time.sleep(0.5)\n"
                "len(cluster.scheduler_info.get('workers', {}))"
            )
            assert joined == str(wanted), joined  # the worker jobs run and joined this notebook's scheduler
            workers = site_dask_workers(site)
            assert len(workers) == wanted and all(f"|{REQUESTS[site]['partition']}|RUNNING" in w for w in workers), (
                workers
            )
            # a Client in the same kernel as its scheduler (under JUPITER's Python 3.13 it lost the
            # scheduler when a worker joined, until extensions/tls_error_queue.py)
            out = kernel.run(
                "from distributed import Client\nclient = Client(cluster)\n"
                "sum(client.gather(client.map(lambda x: x * x, range(10))))"
            )
            assert out == "285", out
            link = ast.literal_eval(kernel.run("cluster.dashboard_link"))
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
            dashboard = requests.get(origin + link, headers={"Authorization": f"token {token}"}, timeout=30)
            assert dashboard.status_code == 200 and "Dask" in dashboard.text
            kernel.run("cluster.close()")
        deadline = time.monotonic() + 60
        while site_dask_workers(site):
            assert time.monotonic() < deadline, site_dask_workers(site)
            time.sleep(1)
        if site in DASK_NOTEBOOK_SITES:
            with Kernel(url, token, timeout=300) as kernel:
                run_dask_starter_notebooks(site, kernel)
    finally:
        in_site(site, ["scancel", "-n", f"aifa-dask-{SITE_USERS[site]['alice']}"])  # none left to hold a node


# The randomized drill across all four sites. JUPITER's simulated booster nodes are whole nodes
# (and slow, emulated): bob starts on the others only.
RANDOM_SITES = {"alice": ("local", "lumi", "jupiter", "lucia"), "bob": ("local", "lumi", "lucia")}
GRANTS_DIR = "/var/lib/aifa-tunnel-grants"


def drill_views(hub) -> tuple[dict, dict, dict]:
    """(hub servers {user: (site, job id)}, Slurm jobs {user: {(site, job id)}}, live tunnels
    {user: {(site, job id)}}): the servers that run, the running or pending workbench jobs of
    this hub on every site, and the tunnels: a grant's gateway listener (LUMI), a tunnel
    daemon's forward (JUPITER, Lucia)."""
    servers, states = {}, {}
    for user in RANDOM_SITES:
        state = states[user] = server_model(hub, user).get("state") or {}
        if state.get("job_id"):
            servers[user] = (state.get("site") or "local", state["job_id"])
    jobs = {}
    for site in ("local", "lumi", "jupiter", "lucia"):
        for user in RANDOM_SITES:
            name = hub.job_name(user)  # the hub user's name, whoever the job runs as there
            argv = ["squeue", "-h", "-n", name, "-t", "PENDING,CONFIGURING,RUNNING", "-o", "%i"]
            out = (
                subprocess.run(argv, capture_output=True, text=True) if site == "local" else in_site(site, argv)
            ).stdout
            for job_id in out.split():
                jobs.setdefault(user, set()).add((site, job_id))
    tunnels = {}
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    for user, (site, job_id) in servers.items():
        port = (states[user].get("tunnel") or {}).get("port")
        if site == "lumi" and port and f"127.0.0.1:{port} " in listening and Path(GRANTS_DIR, str(port)).exists():
            tunnels.setdefault(user, set()).add((site, job_id))
    for forward_id in forward_ids(hub):
        user, _, job_id = forward_id.partition("/")
        site = servers.get(user, ("?",))[0]
        tunnels.setdefault(user, set()).add((site if site in ("jupiter", "lucia") else "?", job_id.rsplit(".", 1)[-1]))
    return servers, jobs, tunnels


def drill_settled(hub, timeout: float = 60 + max(START_TIMEOUT.values())) -> tuple[bool, tuple]:
    deadline = time.monotonic() + timeout
    while True:
        views = drill_views(hub)
        servers, jobs, tunnels = views
        pending = [u for u in RANDOM_SITES if server_model(hub, u).get("pending")]
        with_tunnels = {u: {v} for u, v in servers.items() if v[0] != "local"}
        if not pending and {u: {v} for u, v in servers.items()} == jobs and with_tunnels == tunnels:
            return True, views
        if time.monotonic() > deadline:
            return False, views
        time.sleep(0.5)


def test_random_starts_stops_restarts_and_cancels_across_four_sites_leave_servers_jobs_and_tunnels_equal(remote_hub):
    import os
    import random
    import signal

    from . import hubs

    hub = remote_hub
    for site in ("lumi", "jupiter", "lucia"):
        authorize_line(site, SITE_USERS[site]["bob"], hub_cli(hub, "user-key", "bob", site))
    seed = int(os.environ.get("AIFA_RANDOM_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    tokens = {user: hub.user_token(user) for user in RANDOM_SITES}
    history = []
    for _ in range(int(os.environ.get("AIFA_RANDOM_STEPS", "14"))):
        user = rng.choice(list(RANDOM_SITES))
        action = rng.choice(["start", "start", "stop", "scancel", "restart"])
        site = rng.choice(RANDOM_SITES[user])
        history.append((action, user, site) if action == "start" else (action, user))
        if action == "start":
            request = REQUESTS.get(site, {"partition": "cpu"})
            hub.api("POST", f"users/{user}/server", token=tokens[user], json=request)
        elif action == "stop":
            hub.api("DELETE", f"users/{user}/server", token=tokens[user])
        elif action == "scancel":  # behind the hub's back, on the job's site
            state = server_model(hub, user).get("state") or {}
            if state.get("job_id"):
                argv = ["scancel", state["job_id"]]
                subprocess.run(argv, check=True) if (state.get("site") or "local") == "local" else in_site(
                    state["site"], argv, check=True
                )
        else:  # the hub killed and started again
            hub.proc.send_signal(signal.SIGKILL)
            hub.proc.wait()
            hubs.start_hub_process(hub)
            hubs.wait_until_up(hub)
        settled, (servers, jobs, tunnels) = drill_settled(hub)
        assert settled, (
            f"seed {seed}, after {history}: hub runs {servers}, Slurm runs {jobs}, tunnels {tunnels}\n{hub.log_tail()}"
        )
    print(f"seed {seed}: {len(history)} steps, ending with {servers}")
    for user in RANDOM_SITES:
        hub.api("DELETE", f"users/{user}/server", token=tokens[user])
    settled, views = drill_settled(hub)
    assert settled and views == ({}, {}, {}), views
