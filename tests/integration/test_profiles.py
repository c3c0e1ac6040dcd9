"""Every quick-start profile of the local site, and a custom request, start a real job in the intended
partition with the intended GRES, CPUs, memory and time limit, and JupyterLab answers."""

import subprocess

import pytest
import requests

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.spawners.profiles import quick_start_profiles

from .hubs import wait_ready
from .slurm_helpers import job_fields, wait_for_job_end

pytestmark = pytest.mark.slurm

LOCAL = load_catalogue(enabled=("local",))
PROFILES = quick_start_profiles(LOCAL)


def expected_resources(profile):
    part = LOCAL["local"].partitions[profile.options["partition"]]
    if part.whole_node:
        return part.gpus_per_node, None, part.memory_gb_per_node  # --exclusive: Slurm gives every CPU
    if not part.has_gpus:
        return 0, part.default_cpus, part.default_memory_gb
    gpus = profile.options["gpus"]
    return gpus, gpus * part.cpus_per_gpu, gpus * part.memory_gb_per_gpu


def start_and_check(hub, user, options):
    token = hub.user_token(user)
    r = hub.api("POST", f"users/{user}/server", token=token, json=options)
    assert r.status_code in (201, 202), r.text
    model = wait_ready(hub, user)
    job = job_fields(model["state"]["job_id"])
    status = requests.get(hub.server_url(user) + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200
    return job, model


def stop(hub, user, job_id):
    hub.api("DELETE", f"users/{user}/server", token=hub.user_token(user))
    wait_for_job_end(job_id)


def test_every_local_quick_start_profile_starts_the_intended_job(hub):
    for profile in PROFILES:
        job, model = start_and_check(hub, "alice", {"profile": profile.slug})
        gpus, cpus, memory_gb = expected_resources(profile)
        where = f"profile {profile.slug}: {job}"
        assert job["JobState"] == "RUNNING" and job["Partition"] == profile.options["partition"], where
        assert job["TimeLimit"] == f"0{profile.options['hours']}:00:00", where
        part = LOCAL["local"].partitions[profile.options["partition"]]
        whole_jupiter_node = part.family == "jupiter" and part.whole_node  # --mem=0: the node's all
        assert job["MinMemoryNode"] == ("0" if whole_jupiter_node else f"{memory_gb}G"), where
        assert job["Requeue"] == ("0" if part.family == "lumi" else "1"), where  # LUMI's --no-requeue
        if gpus:
            assert job.get("TresPerNode") == f"gres:gpu:{gpus}", where
        else:
            assert "gpu" not in job.get("TresPerNode", ""), where
        if cpus is None:
            assert job["OverSubscribe"] == "NO" and int(job["NumCPUs"]) == 64, where
        else:
            assert int(job["NumCPUs"]) == cpus, where
        assert job["Account"] == "proj_sme", where
        stop(hub, "alice", model["state"]["job_id"])


@pytest.fixture
def reservation():
    name = "intro-to-llms"
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)
    subprocess.run(
        [
            "scontrol",
            "create",
            "reservation",
            f"reservationname={name}",
            "users=alice",
            "starttime=now",
            "duration=30",
            "corecnt=16",
            "nodecnt=1",
            "partitionname=gpu",
        ],
        check=True,
        capture_output=True,
    )
    yield name
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)


def test_a_custom_request_gets_exactly_what_it_asked_for(hub, reservation):
    options = {
        "site": "local",
        "partition": "gpu",
        "gpus": 2,
        "cpus": 10,
        "memory_gb": 100,
        "hours": 3,
        "account": "proj_training",
        "reservation": reservation,
    }
    job, model = start_and_check(hub, "alice", options)
    assert (job["Partition"], job["Account"], job["Reservation"]) == ("gpu", "proj_training", reservation)
    assert (job["TresPerNode"], job["NumCPUs"], job["MinMemoryNode"], job["TimeLimit"]) == (
        "gres:gpu:2",
        "10",
        "100G",
        "03:00:00",
    )
    stop(hub, "alice", model["state"]["job_id"])


def test_a_reservation_or_account_of_someone_else_is_refused(hub, reservation):
    token = hub.user_token("bob")
    r = hub.api("POST", "users/bob/server", token=token, json={"partition": "gpu", "reservation": reservation})
    assert r.status_code == 400 and "'reservation' must be one of: none" in r.json()["message"]
    r = hub.api("POST", "users/bob/server", token=token, json={"partition": "gpu", "account": "proj_sme"})
    assert r.status_code == 400 and "'account' must be one of: proj_research" in r.json()["message"]
