"""From the hub outside the sites: a quick spawn on each simulated site starts JupyterLab as a
Slurm job of that site's user, in that site's namespace and cluster, with the site's runtime and
home; a kernel computes through the proxy; stop ends the job there."""
import subprocess
import time

import pytest
import yaml

from .hubs import server_model, wait_ready
from .jupyter_client_helpers import execute
from .sim_sites import SITE_NODES, SITE_USERS, SITES_ROOT, authorize_line, in_site, site_env

pytestmark = [pytest.mark.sites, pytest.mark.slurm]
REQUESTS = {"lumi": {"site": "lumi", "partition": "small-g", "gpus": 1},
            "jupiter": {"site": "jupiter", "partition": "booster"},
            "lucia": {"site": "lucia", "partition": "gpu", "gpus": 1}}
SIM_KEYS = ("sites", "catalogue_dir", "runtime_owners", "site_users", "hub_bind_address")


@pytest.fixture(scope="module")
def remote_hub(cluster):
    from . import hubs

    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    hub = hubs.running_hub("remote", "/", {key: simulated[key] for key in SIM_KEYS})
    for site in REQUESTS:   # alice gives the site the key the hub made for her (the site's portal)
        public = subprocess.run(["runuser", "-u", "aifa-hub", "--", "env", f"AIFA_WORKBENCH_SETTINGS={hub.home}/workbench.yaml",
                                 "/opt/aifa-workbench/venv/bin/aifa-workbench", "user-key", "alice", site],
                                capture_output=True, text=True, check=True).stdout
        authorize_line(site, SITE_USERS[site]["alice"], public)
    yield hub
    hubs.stop_servers(hub)
    hubs.stop_hub(hub)


def site_job(site: str, job_id: str) -> dict:
    out = in_site(site, ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%u|%T|%N|%Z"]).stdout.strip()
    if not out:
        return {}
    user, state, node, workdir = out.split("|")
    return {"user": user, "state": state, "node": node, "workdir": workdir}


@pytest.mark.parametrize("site", list(REQUESTS))
def test_a_server_runs_as_the_sites_user_in_the_sites_cluster_and_stops_there(remote_hub, site):
    hub, token = remote_hub, remote_hub.user_token("alice")
    r = hub.api("POST", "users/alice/server", token=token, json=REQUESTS[site])
    assert r.status_code in (201, 202), r.text
    model = wait_ready(hub, "alice", timeout=180)
    job_id = model["state"]["job_id"]
    assert model["state"]["site"] == site
    on_site = site_job(site, job_id)
    home = site_env(site)["HOME_PATTERN"].replace("{user}", SITE_USERS[site]["alice"])
    assert on_site == {"user": SITE_USERS[site]["alice"], "state": "RUNNING", "node": SITE_NODES[site],
                       "workdir": home}, on_site
    url = hub.server_url("alice")
    assert execute(url, token, "5 * 4") == "20"
    where = execute(url, token, "import os, sys; (os.environ['HOME'], sys.prefix.split('/')[-2:])")
    assert home in where
    assert hub.api("DELETE", "users/alice/server", token=token).status_code in (202, 204)
    deadline = time.monotonic() + 60
    while site_job(site, job_id).get("state") in ("RUNNING", "COMPLETING", "PENDING"):
        assert time.monotonic() < deadline, site_job(site, job_id)
        time.sleep(1)
    assert not server_model(hub, "alice").get("ready")
