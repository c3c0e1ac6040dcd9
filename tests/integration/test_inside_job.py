"""Inside a real job: the job status endpoint, Dask presets on the real cluster with the dashboard
through the hub, dask-labextension's view of clusters, refusals in sentences, starter notebooks."""

import ast
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from .hubs import wait_ready
from .jupyter_client_helpers import Kernel

pytestmark = pytest.mark.slurm


def user_jobs(user: str, name: str) -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--user={user}", f"--name={name}", "--format=%i|%P|%a|%T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("|")[0]: line for line in out.split()}


def wait_for_workers_jobs(done, timeout: float) -> None:
    """Poll alice's Dask worker jobs until `done(jobs)` or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done(user_jobs("alice", "aifa-dask-alice")) and time.monotonic() < deadline:
        time.sleep(1)


@pytest.fixture
def alice_server(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "gpu", "gpus": 1, "cpus": 2, "memory_gb": 8})
    wait_ready(hub, "alice")
    yield hub.server_url("alice"), token
    hub.api("DELETE", "users/alice/server", timeout=120)


def test_the_job_status_endpoint_describes_the_job(alice_server):
    server, token = alice_server
    status = requests.get(server + "workbench/job", headers={"Authorization": f"token {token}"}, timeout=30).json()
    assert (status["site"], status["partition"], status["account"], status["gpus"]) == ("local", "gpu", "proj_sme", 1)
    assert status["node"] == "vm" and status["cpus"] == 2 and status["memory_gb"] == 8
    assert 3500 < status["seconds_left"] <= 3600 and status["warn_minutes"] == [10, 2]
    assert status["cost_unit"] == "GPU-hours" and status["cost_per_hour"] == 1 and status["cost_so_far"] < 0.1
    assert requests.get(server + "workbench/job", timeout=30).status_code in (302, 403)  # not without login
    copied = {p.name for p in Path("/home/alice/starter-notebooks").glob("*.ipynb")}
    assert {"01-welcome.ipynb", "05-explore-interactively.ipynb"} <= copied  # the job copied them at start


def test_a_dask_preset_runs_workers_on_the_cluster_with_its_dashboard_through_the_hub(hub, alice_server):
    server, token = alice_server
    with Kernel(server, token, timeout=240) as kernel:
        kernel.run(
            "import json, workbench\nfrom distributed import Client\n"
            "cluster = workbench.dask_cluster('cpu-workers', workers=2)\nclient = Client(cluster)\n"
            "client.wait_for_workers(2, timeout=180)"
        )
        out = json.loads(
            ast.literal_eval(
                kernel.run(
                    "json.dumps({'sum': sum(client.gather(client.map(lambda x: x * x, range(10)))),"
                    " 'link': cluster.dashboard_link, 'script': cluster.job_script()})"
                )
            )
        )
        assert out["sum"] == 285
        script = out["script"]
        for directive in (
            "-p cpu",
            "-A proj_sme",
            "--cpus-per-task=1",
            "--mem=2G",
            "--export=NONE",
            "-J aifa-dask-alice",
        ):
            assert directive in script, script
        assert "--interface lo" in script
        workers = user_jobs("alice", "aifa-dask-alice")
        assert len(workers) == 2 and all("|cpu|proj_sme|RUNNING" in line for line in workers.values()), workers
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(server))  # the user's own origin
        assert out["link"].startswith(urlsplit(server).path + "proxy/") and out["link"].endswith("/status")
        dashboard = requests.get(origin + out["link"], headers={"Authorization": f"token {token}"}, timeout=30)
        assert dashboard.status_code == 200 and "Dask" in dashboard.text
        # JupyterLab's Dask tab lists the notebook's cluster, with its dashboard, and leaves it to the notebook
        headers = {"Authorization": f"token {token}"}
        [listed] = requests.get(server + "dask/clusters", headers=headers, timeout=30).json()
        assert (listed["name"], listed["workers"], listed["dashboard_link"]) == ("cpu-workers on cpu", 2, out["link"])
        refused = requests.patch(
            server + f"dask/clusters/{listed['id']}", headers=headers, json={"workers": 5}, timeout=30
        )
        assert refused.status_code == 500 and "made in a notebook" in refused.text
        kernel.run("cluster.scale(1)\nimport time\nwhile len(client.scheduler_info()['workers']) > 1: time.sleep(0.5)")
        assert requests.get(server + "dask/clusters", headers=headers, timeout=30).json()[0]["workers"] == 1
        kernel.run("client.close(); cluster.close()")
        assert requests.get(server + "dask/clusters", headers=headers, timeout=30).json() == []
    wait_for_workers_jobs(lambda jobs: not jobs, 60)
    assert not user_jobs("alice", "aifa-dask-alice")


def test_a_preset_asking_too_much_or_a_foreign_account_gets_a_sentence(alice_server):
    server, token = alice_server
    with Kernel(server, token) as kernel:
        kernel.run("import workbench")
        for call, words in [
            ("dask_cluster('cpu-workers', cpus=999)", "'cpus' must be from 1 to 64"),
            ("dask_cluster('cpu-workers', account='proj_research')", "'account' must be one of"),
            ("dask_cluster('big-workers')", "There is no Dask preset 'big-workers'"),
        ]:
            message = kernel.run(
                f"message = None\ntry:\n    workbench.{call}\n"
                "except workbench.WorkbenchError as e:\n    message = str(e)\nmessage"
            )
            assert message and words in message, (call, message)


def test_jupyterlabs_dask_tab_creates_lists_scales_and_stops_a_preset_cluster(alice_server):
    server, token = alice_server
    headers = {"Authorization": f"token {token}"}
    created = requests.put(server + "dask/clusters", headers=headers, timeout=120)
    assert created.status_code == 200, created.text
    cluster = created.json()
    assert cluster["name"] == "cpu-workers on cpu #1"  # the preset and its partition
    listed = requests.get(server + "dask/clusters", headers=headers, timeout=30).json()
    assert [c["id"] for c in listed] == [cluster["id"]] and "/proxy/" in listed[0]["dashboard_link"]
    scaled = requests.patch(server + f"dask/clusters/{cluster['id']}", headers=headers, timeout=60, json={"workers": 1})
    assert scaled.status_code == 200, scaled.text
    wait_for_workers_jobs(bool, 90)
    assert all("|cpu|proj_sme|" in line for line in user_jobs("alice", "aifa-dask-alice").values())
    assert requests.delete(server + f"dask/clusters/{cluster['id']}", headers=headers, timeout=60).status_code == 204
    wait_for_workers_jobs(lambda jobs: not jobs, 60)
    assert not user_jobs("alice", "aifa-dask-alice")


def test_the_job_panel_shows_the_job(alice_server):
    server, token = alice_server
    with Kernel(server, token) as kernel:
        html = kernel.run(
            "import workbench\nfrom aifa_workbench.extensions.panel import render_html\n"
            "render_html(workbench.job_status())"
        )
        assert "gpu" in html and "proj_sme" in html and "GPU-hours" in html
        assert kernel.run("type(workbench.job_panel()).__name__") == "'VBox'"
