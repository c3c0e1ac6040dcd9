"""Pure parts of what runs inside the job: job context, status, Dask preset arguments, panel, notebooks copy."""

import hashlib
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from aifa_workbench.extensions import dask_presets as dp
from aifa_workbench.extensions.job_context import (
    NotebookJob,
    WorkbenchError,
    environ_job_record,
    job_status,
    memory_gb,
    parse_scontrol_job,
    scontrol_job,
)
from aifa_workbench.extensions.panel import panel_rows, render_html
from aifa_workbench.extensions.starter_notebooks import MANIFEST, TARGET_DIR, copy_starter_notebooks
from aifa_workbench.model.catalogue import CatalogueError, load_catalogue, site_from_dict
from aifa_workbench.model.request import UserContext

SITES = load_catalogue()
ENV = {
    "SLURM_JOB_ID": "42",
    "USER": "alice",
    "AIFA_WORKBENCH_SITE": "local",
    "AIFA_WORKBENCH_ENVIRONMENT": "workbench",
    "SLURM_JOB_ACCOUNT": "proj_sme",
    "SLURM_JOB_PARTITION": "gpu",
    "SLURMD_NODENAME": "vm",
}
SCONTROL = (
    "JobId=42 JobName=aifa-wb-alice JobState=RUNNING StartTime=2026-11-22T10:00:00 "
    "EndTime=2026-11-22T12:00:00 NodeList=vm TRES=cpu=8,mem=60G,node=1,billing=8,gres/gpu=1"
)
ALICE = UserContext(accounts={"local": ("proj_sme", "proj_training")}, reservations={"local": ("workshop",)})
PRIVATE = {"dashboard_secret": "s3cr3t-s3cr3t-s3cr3t", "scheduler_directory": "/tmp/aifa-dask-scheduler-x"}


def test_the_notebook_job_comes_from_the_environment_and_outside_a_job_is_a_sentence():
    job = NotebookJob.from_environ(ENV)
    assert (job.site, job.account, job.partition, job.reservation) == ("local", "proj_sme", "gpu", None)
    with pytest.raises(WorkbenchError, match="does not run inside a workbench job"):
        NotebookJob.from_environ({})


def test_status_has_time_left_and_cost_so_far():
    slurm = parse_scontrol_job(SCONTROL)
    assert (slurm["gpus"], slurm["cpus"], slurm["memory_gb"]) == (1, 8, 60)
    status = job_status(NotebookJob.from_environ(ENV), SITES["local"], slurm, datetime(2026, 11, 22, 11, 30))
    assert status["seconds_left"] == 1800 and status["cost_per_hour"] == 1 and status["cost_so_far"] == 1.5
    rows = dict(panel_rows(status))
    assert rows["Time left"] == "30 min 00 s" and rows["GPUs"] == "1 GPU"
    assert "1.50 GPU-hours so far" in rows["Estimated cost"]
    assert "<script" not in render_html({**status, "account": "<script>"})
    assert memory_gb("512M") == 0.5 and memory_gb("2048") == 2


def test_inside_an_image_without_slurm_the_job_comes_from_what_slurm_put_in_its_environment(tmp_path):
    """LUMI's AI Factory images hold no Slurm commands: the panel reads the job's own variables,
    and a Dask preset, which needs sbatch, says what to do instead."""
    start, end = datetime(2026, 11, 22, 10, 0), datetime(2026, 11, 22, 12, 0)
    env = {
        **ENV,
        "SLURM_JOB_START_TIME": str(int(start.timestamp())),
        "SLURM_JOB_END_TIME": str(int(end.timestamp())),
        "SLURM_CPUS_ON_NODE": "8",
        "SLURM_MEM_PER_NODE": "61440",
        "SLURM_JOB_GPUS": "3",
        "AIFA_WORKBENCH_SLURM_BIN": str(tmp_path),  # no scontrol, no sbatch there
    }
    job = NotebookJob.from_environ(env)
    slurm = scontrol_job(job, env=env)
    assert slurm == parse_scontrol_job(SCONTROL) | {"node": "vm"}
    assert job_status(job, SITES["local"], slurm, datetime(2026, 11, 22, 11, 30))["seconds_left"] == 1800
    assert environ_job_record({**env, "SLURM_JOB_END_TIME": "soon"}) is None
    with pytest.raises(WorkbenchError, match="did not say when job 42 ends"):
        scontrol_job(job, env=ENV)
    with pytest.raises(WorkbenchError, match="submit their workers with Slurm's sbatch, which this environment does"):
        dp.require_sbatch(job, SITES["local"])
    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    dp.require_sbatch(job, SITES["local"])
    # scontrol fails (slurmctld busy, a stand-in that cannot reach it): the job's variables still say
    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out' >&2; exit 1\n")
    (tmp_path / "scontrol").chmod(0o755)
    assert scontrol_job(job, env=env) == slurm
    with pytest.raises(WorkbenchError, match="Slurm knows nothing about job 42: slurm_load_jobs error"):
        scontrol_job(job, env=ENV)


def test_a_preset_becomes_cluster_arguments_from_the_catalogue_and_the_job():
    job = NotebookJob.from_environ({**ENV, "SLURM_JOB_RESERVATION": "workshop"})
    request = dp.preset_request(SITES["local"], "gpu-workers", job, ALICE, {})
    kwargs = dp.cluster_kwargs(SITES["local"], request, job, 45, "/home/alice", "/opt/v/bin/python", **PRIVATE)
    assert (kwargs["queue"], kwargs["account"], kwargs["cores"], kwargs["memory"]) == ("gpu", "proj_sme", 2, "8GB")
    assert kwargs["walltime"] == "00:45:00"  # capped by the notebook's own job
    assert kwargs["job_mem"] == "8G" and kwargs["death_timeout"] == 60
    assert kwargs["interface"] == "lo" and kwargs["job_name"] == "aifa-dask-alice"
    assert kwargs["job_extra_directives"] == ["--export=NONE", "--gres=gpu:1", "--reservation=workshop"]
    lumi = SITES["lumi"]
    lumi_job = NotebookJob.from_environ(
        {
            **ENV,
            "AIFA_WORKBENCH_SITE": "lumi",
            "SLURM_JOB_ACCOUNT": "project_465000001",
            "AIFA_WORKBENCH_ENVIRONMENT": "lumi-stack",
        }
    )
    user = UserContext(accounts={"lumi": ("project_465000001",)})
    lumi_kwargs = dp.cluster_kwargs(
        lumi,
        dp.preset_request(lumi, "gpu-workers", lumi_job, user, {}),
        lumi_job,
        None,
        "/users/a",
        "/opt/v/bin/python",
        **PRIVATE,
    )
    assert "--gpus-per-node=1" in lumi_kwargs["job_extra_directives"] and lumi_kwargs["interface"] == "hsn0"
    assert lumi_kwargs["walltime"] == "02:00:00"
    in_image = NotebookJob.from_environ(
        {
            **ENV,
            "AIFA_WORKBENCH_SITE": "lumi",
            "SLURM_JOB_ACCOUNT": "project_465000001",
            "AIFA_WORKBENCH_ENVIRONMENT": "pytorch-container",
        }
    )
    runtime_python = "/appl/local/aifa-workbench/containers/pytorch-container/current/bin/python"
    container_kwargs = dp.cluster_kwargs(
        lumi,
        dp.preset_request(lumi, "gpu-workers", in_image, user, {}),
        in_image,
        None,
        "/users/a",
        runtime_python,
        **PRIVATE,
    )
    # workers run in the notebook's image, from the runtime made inside it, bound in
    image = lumi.environments["pytorch-container"].container
    assert container_kwargs["python"] == f"singularity run --bind /appl/local/aifa-workbench {image} {runtime_python}"
    # with --export=NONE the workers' `module` lines need Lmod, from the site's profile if missing
    assert container_kwargs["job_script_prologue"][0] == dp.MODULE_FALLBACK
    assert dp.MODULE_FALLBACK not in kwargs["job_script_prologue"]  # the local site loads no modules
    # the workers get what the notebook's own job gets on that site (model.job_env), before the modules
    prologue = container_kwargs["job_script_prologue"]
    assert "export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3" in prologue and "export PYTHONNOUSERSITE=1" in prologue
    assert prologue.index("export PYTHONNOUSERSITE=1") < prologue.index("module purge")
    assert any("MIOPEN_USER_DB=" in line for line in prologue)
    assert "export PYTHONNOUSERSITE=1" not in lumi_kwargs["job_script_prologue"]  # the site's stack: a venv


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"gpus": 9}, "'gpus' must be from 1 to 4"),
        ({"account": "proj_research"}, "'account' must be one of"),
        ({"nodes": 2}, "does not take nodes"),
    ],
)
def test_a_preset_asking_what_is_not_allowed_is_a_sentence(overrides, words):
    job = NotebookJob.from_environ(ENV)
    with pytest.raises(WorkbenchError, match=words):
        dp.preset_request(SITES["local"], "gpu-workers", job, ALICE, overrides)


def test_another_partition_takes_its_own_shape_and_workers_talk_tls():
    job = NotebookJob.from_environ(ENV)
    request = dp.preset_request(SITES["local"], "gpu-workers", job, ALICE, {"partition": "booster"})
    assert (request.partition, request.gpus, request.cpus) == ("booster", 4, 64)
    kwargs = dp.cluster_kwargs(SITES["local"], request, job, None, "/home/alice", "/opt/v/bin/python", **PRIVATE)
    assert kwargs["security"] is True and kwargs["shared_temp_directory"] == "/home/alice/.aifa-workbench/dask-tls"
    assert kwargs["scheduler_options"]["dashboard_address"] == "127.0.0.1:0"


@pytest.mark.parametrize(
    "name",
    [
        "x EndTime=2030-01-01T00:00:00",
        "x UserId=alice(1000) JobState=RUNNING StartTime=2030-01-01T00:00:00 "
        "EndTime=2030-01-01T00:00:00 NodeList=elsewhere",
    ],
)
def test_neither_a_job_name_nor_a_comment_can_shadow_a_slurm_field(name):
    forged = SCONTROL.replace("JobName=aifa-wb-alice", f"JobName={name} UserId=alice(1000)") + (
        " Comment=EndTime=2031-01-01T00:00:00 NodeList=nowhere"
    )
    for job_name in (name, "renamed-since"):  # the job's own name known, or not what it was
        slurm = parse_scontrol_job(forged, job_name)
        assert (slurm["end"], slurm["node"]) == (datetime(2026, 11, 22, 12, 0), "vm")
    assert NotebookJob.from_environ({**ENV, "SLURM_JOB_NAME": name}).name == name


def test_workers_need_time_left_in_the_session():
    job = NotebookJob.from_environ(ENV)
    request = dp.preset_request(SITES["local"], "cpu-workers", job, ALICE, {})
    with pytest.raises(WorkbenchError, match="ends in 3 minutes"):
        dp.worker_walltime(request, 3)


def test_a_catalogue_preset_beyond_its_partition_stops_the_hub(tmp_path):
    import yaml

    data = yaml.safe_load((SITES["local"].path and open(SITES["local"].path).read()))
    data["dask_presets"]["gpu-workers"]["gpus"] = 99
    with pytest.raises(CatalogueError, match=r"local.yaml: dask_presets.gpu-workers: 'gpus' must be from 1 to 4"):
        site_from_dict(data, tmp_path / "local.yaml")
    data["dask_presets"]["gpu-workers"] = {"title": "x", "partition": "nope"}
    with pytest.raises(CatalogueError, match="dask_presets.gpu-workers.partition: 'nope' is not one of"):
        site_from_dict(data, tmp_path / "local.yaml")


def test_starter_notebooks_are_copied_once_and_never_over_edits(tmp_path):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    for name in ("a.ipynb", "b.ipynb"):
        (bundled / name).write_text(json.dumps({"name": name}))
    home = tmp_path / "home"
    both = {n: bundled / n for n in ("a.ipynb", "b.ipynb")}
    assert copy_starter_notebooks(home, {"a.ipynb": bundled / "a.ipynb"}) == (["a.ipynb"], [])
    (home / TARGET_DIR / "a.ipynb").write_text("my edits")
    assert copy_starter_notebooks(home, both) == (["b.ipynb"], [])
    assert (home / TARGET_DIR / "a.ipynb").read_text() == "my edits"
    (home / TARGET_DIR / "b.ipynb").unlink()  # deleted stays deleted
    (bundled / "a.ipynb").write_text("a new version")  # and edits stay, whatever the new version
    assert copy_starter_notebooks(home, both) == ([], [])
    assert (home / TARGET_DIR / "a.ipynb").read_text() == "my edits"
    assert sorted(json.loads((home / MANIFEST).read_text())) == ["a.ipynb", "b.ipynb"]


def test_a_starter_notebook_the_user_never_changed_is_brought_up_to_date(tmp_path):
    """A new guard in a notebook's first cell reaches the users who already have a copy, unless
    they changed it: the copy is unchanged if it is what was copied (the manifest's fingerprint),
    or, under the first manifests (names alone), one of the versions the workbench shipped."""
    bundled, home = tmp_path / "bundled", tmp_path / "home"
    bundled.mkdir()
    (bundled / "a.ipynb").write_text("version 1")
    assert copy_starter_notebooks(home, {"a.ipynb": bundled / "a.ipynb"}) == (["a.ipynb"], [])
    (bundled / "a.ipynb").write_text("version 2")
    assert copy_starter_notebooks(home, {"a.ipynb": bundled / "a.ipynb"}) == ([], ["a.ipynb"])
    assert (home / TARGET_DIR / "a.ipynb").read_text() == "version 2"
    assert not list((home / TARGET_DIR).glob(".*"))  # no partial file left behind

    old_home = tmp_path / "old-home"  # copied by an earlier workbench: the manifest lists names
    (old_home / TARGET_DIR).mkdir(parents=True)
    (old_home / MANIFEST).parent.mkdir()
    (old_home / MANIFEST).write_text(json.dumps(["a.ipynb", "b.ipynb"]))
    (old_home / TARGET_DIR / "a.ipynb").write_text("version 1")
    (old_home / TARGET_DIR / "b.ipynb").write_text("version 1 and my edits")
    (bundled / "b.ipynb").write_text("b, version 2")
    shipped = {"a.ipynb": [hashlib.sha256(b"version 1").hexdigest()], "b.ipynb": [hashlib.sha256(b"v1").hexdigest()]}
    assert copy_starter_notebooks(old_home, {n: bundled / n for n in ("a.ipynb", "b.ipynb")}, shipped) == (
        [],
        ["a.ipynb"],
    )
    assert (old_home / TARGET_DIR / "b.ipynb").read_text() == "version 1 and my edits"


def test_the_copy_follows_no_link_left_in_the_home(tmp_path):
    """A link someone left where the manifest goes (an unpacked archive, say) is replaced, not
    written through: the file it points at stays as it was."""
    bundled, home = tmp_path / "bundled", tmp_path / "home"
    bundled.mkdir()
    (bundled / "a.ipynb").write_text("version 1")
    (home / ".aifa-workbench").mkdir(parents=True)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (home / MANIFEST).symlink_to(precious)
    assert copy_starter_notebooks(home, {"a.ipynb": bundled / "a.ipynb"}) == (["a.ipynb"], [])
    assert precious.read_text() == "keep me" and not (home / MANIFEST).is_symlink()


def test_every_version_of_a_starter_notebook_the_workbench_shipped_is_known(request):
    """past-versions.json lists every earlier version of each notebook in git's history, so that an
    unchanged copy of any of them is brought up to date (UPDATE_GOLDEN=1 writes it)."""
    root = Path(request.config.rootpath)
    history = subprocess.run(
        ["git", "-C", str(root), "log", "--format=%H", "--", "notebooks"], capture_output=True, text=True
    )
    if history.returncode != 0 or not history.stdout.strip():
        pytest.skip("no git history here")
    listed = json.loads((root / "notebooks" / "past-versions.json").read_text())
    found = {}
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        current = hashlib.sha256(notebook.read_bytes()).hexdigest()
        versions = set()
        for commit in history.stdout.split():
            shown = subprocess.run(
                ["git", "-C", str(root), "show", f"{commit}:notebooks/{notebook.name}"], capture_output=True
            )
            if shown.returncode == 0:
                versions.add(hashlib.sha256(shown.stdout).hexdigest())
        found[notebook.name] = sorted(versions - {current} | set(listed.get(notebook.name, ())) - {current})
    if os.environ.get("UPDATE_GOLDEN"):
        (root / "notebooks" / "past-versions.json").write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    assert listed == found, "a notebook changed: run UPDATE_GOLDEN=1 pytest -m unit tests/unit/test_inside_job.py"


def test_the_catalogue_is_read_and_checked_once_per_process_not_on_every_status_request(tmp_path, monkeypatch):
    """Every open JupyterLab tab asks the job's status every minute: the catalogue behind it does
    not change while the job runs, so it is validated once."""
    import shutil

    from aifa_workbench.extensions import job_context
    from aifa_workbench.model import catalogue

    shutil.copy(catalogue.bundled_sites_dir() / "local.yaml", tmp_path / "local.yaml")
    loads = []
    real_load_site = catalogue.load_site
    monkeypatch.setattr(catalogue, "load_site", lambda path: loads.append(path) or real_load_site(path))
    monkeypatch.setattr(job_context, "scontrol_job", lambda job: parse_scontrol_job(SCONTROL))
    monkeypatch.setattr(job_context, "budget_text", lambda job, site: None)
    env = {**ENV, "SLURM_JOB_ID": "4242", "AIFA_WORKBENCH_CATALOGUE": str(tmp_path)}
    for _ in range(3):
        assert job_context.current_status(env, cached=True)["site"] == "local"
    assert len(loads) == 1
