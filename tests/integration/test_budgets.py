"""Budgets on the local cluster: Slurm bills each partition as the catalogue says (the jobs the
spawner writes, run for real, carry `billing` = 100 per unit-hour), and a project with a budget
(GrpTRESMins=billing) shows what is left in the spawn form; a request costing more is refused
with a sentence naming the project, what is left and what was asked; one that fits runs."""

import re
import subprocess
import time
from pathlib import Path

import pytest

from aifa_workbench.model.catalogue import load_site
from aifa_workbench.model.cost import estimate_cost

from .hubs import login, wait_ready
from .slurm_helpers import job_fields, wait_for_job_end

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "scripts"
KEPT = re.compile(r"^#SBATCH (--(partition|time|nodes|ntasks|gpus-per-node|gres|cpus-per-task|mem|exclusive)\b.*)$")


def sbatch_options(partition: str) -> list[str]:
    """The resource lines of the script the spawner writes for `partition` (its golden file)."""
    lines = (GOLDEN / f"local-{partition}-workbench.sh").read_text().splitlines()
    return [m.group(1) for m in map(KEPT.match, lines) if m]


def asked(options: list[str]) -> dict:
    values = dict(o.lstrip("-").split("=", 1) for o in options if "=" in o)
    gpus = int(values.get("gpus-per-node") or values.get("gres", "gpu:0").split(":")[-1])
    hours, minutes, _ = (int(x) for x in values["time"].split(":"))
    return {
        "gpus": gpus,
        "cpus": int(values["cpus-per-task"]),
        "memory_gb": int(values["mem"].rstrip("G")),
        "hours": hours + minutes / 60,
    }


def running_billing(options: list[str]) -> int:
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "bob",
            "--",
            "sbatch",
            "--parsable",
            "--account=proj_research",
            "-o",
            "/dev/null",
            "--chdir=/tmp",
            *options,
            "--wrap",
            "sleep 120",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = result.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 60
        while job_fields(job_id).get("JobState") != "RUNNING":
            assert time.monotonic() < deadline, f"job {job_id} did not start: {job_fields(job_id).get('Reason')}"
            time.sleep(0.3)
        return int(re.search(r"billing=(\d+)", job_fields(job_id)["TRES"]).group(1))
    finally:
        subprocess.run(["scancel", job_id])
        wait_for_job_end(job_id)


@pytest.mark.parametrize("partition", ["cpu", "small-g", "standard-g", "booster", "gpu"])
def test_slurm_bills_each_partition_as_the_catalogue_costs_it(cluster, partition):
    site = load_site(ROOT / "model" / "sites" / "local.yaml")
    options = sbatch_options(partition)
    request = asked(options)
    per_hour = (
        estimate_cost(
            site.partitions[partition], request["gpus"], request["cpus"], request["memory_gb"], request["hours"]
        )
        / request["hours"]
    )
    assert running_billing(options) == round(per_hour * site.budget["per_unit_hour"])


@pytest.fixture
def budget_account():
    """proj_budget: half a GPU-hour (3000 billing-minutes), carol in it; the hub reads its jobs."""

    def sacctmgr(*args):
        subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True)

    sacctmgr("add", "account", "proj_budget", "parent=aifa", "GrpTRESMins=billing=3000")
    sacctmgr("add", "user", "carol", "account=proj_budget")
    sacctmgr("add", "coordinator", "account=proj_budget", "names=aifa-hub")
    yield "proj_budget"
    sacctmgr("delete", "user", "carol", "account=proj_budget")
    sacctmgr("delete", "account", "proj_budget")


def test_the_form_shows_what_is_left_and_a_request_over_it_is_refused_in_words(start_hub, budget_account):
    hub = start_hub("budgets")
    session = login(hub, "carol")
    form = session.get(hub.url + "hub/spawn", timeout=30).text
    assert "0.5 of 0.5 GPU-hours left in proj_budget" in form
    token = hub.user_token("carol")
    too_much = {"partition": "small-g", "gpus": 2, "cpus": 14, "memory_gb": 120, "hours": 1, "account": budget_account}
    r = hub.api("POST", "users/carol/server", token=token, json=too_much)
    assert r.status_code == 400, r.text
    assert (
        "Project proj_budget has 0.5 GPU-hours left, and this session would use up to 1 GPU-hours."
        in r.json()["message"]
    )
    fits = {**too_much, "gpus": 1, "cpus": 7, "memory_gb": 60}
    r = hub.api("POST", "users/carol/server", token=token, json=fits)
    assert r.status_code in (201, 202), r.text
    job_id = wait_ready(hub, "carol")["state"]["job_id"]
    assert job_fields(job_id)["Account"] == budget_account
    again = hub.api("GET", "users/carol").json()
    assert again["servers"][""]["ready"]
    hub.api("DELETE", "users/carol/server", token=token)
    wait_for_job_end(job_id)
