"""Batch scripts: one golden file per partition of every site (diff them against the sites' docs),
and the escaping rules."""

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.model.request import JobRequest, UserContext, parse_job_request
from aifa_workbench.spawners.script import (
    ScriptContext,
    ScriptError,
    render_batch_script,
    runtime_paths,
    sbatch_value,
    server_launch_argv,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "scripts"
SITES = load_catalogue()
CTX = ScriptContext(
    username="alice",
    home="/home/alice",
    venv_bin="/opt/aifa-workbench/venv/bin",
    launch_argv=server_launch_argv("/opt/aifa-workbench/venv/bin"),
    export_names=("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"),
)
CASES = [(site, part, env) for site in SITES.values() for part in site.partitions for env in site.environments]


def golden_context(site, environment) -> ScriptContext:
    """As the spawner makes it: the hub's venv and sbatch's --export here, the site's home, runtime
    and a private variables file on a remote site."""
    if site.transport == "local":
        return CTX
    paths = runtime_paths(site, environment, "/opt/aifa-workbench/venv")
    home = {
        "lumi": "/users/alice",
        "jupiter": "/e/home/jusers/alice/jupiter",
        "lucia": "/gpfs/home/acad/ucl-elen/alice",
    }[site.name]
    return ScriptContext(
        username="alice",
        home=home,
        venv_bin=paths.venv_bin,
        launch_argv=server_launch_argv(paths.server_bin),
        export_names=CTX.export_names,
        slurm_bin=site.paths.slurm_bin,
        env_file=f"{home}/.aifa-workbench/job-env-0123456789abcdef",
        container_runtime=paths.container_runtime,
        container_binds=paths.container_binds,
        tunnel=site.reach is not None and site.reach.mode == "reverse",
        # the project's folders as the catalogue names them for the example account, as a start
        # finds them on the site (a variable: as the site's login shell sets it)
        project_dir=site_says((site.paths.project or "").replace("{account}", site.account_example)),
        scratch_dir=site_says((site.paths.scratch or "").replace("{account}", site.account_example)),
    )


# what JSC's login environment sets for the example project (its file systems are under /e/)
LOGIN_VARIABLES = {"$PROJECT_aifabe": "/e/project1/aifabe", "$SCRATCH_aifabe": "/e/scratch/aifabe"}


def site_says(where: str) -> str:
    return LOGIN_VARIABLES[where] if where.startswith("$") else where


def golden_request(site, partition, environment) -> JobRequest:
    user = UserContext(accounts={site.name: (site.account_example,)}, reservations={site.name: ("course_day1",)})
    options = {
        "site": site.name,
        "partition": partition,
        "environment": environment,
        "hours": 2,
        "reservation": "course_day1",
    }
    if site.partitions[partition].has_gpus and not site.partitions[partition].whole_node:
        options["gpus"] = 2
    return parse_job_request(options, SITES, user, site.name)


@pytest.mark.parametrize("site, partition, environment", CASES, ids=[f"{s.name}-{p}-{e}" for s, p, e in CASES])
def test_golden_script(site, partition, environment):
    script = render_batch_script(golden_request(site, partition, environment), site, golden_context(site, environment))
    path = GOLDEN / f"{site.name}-{partition}-{environment}.sh"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(script)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert script == path.read_text()


def test_every_golden_file_has_a_case():
    expected = {f"{s.name}-{p}-{e}.sh" for s, p, e in CASES}
    assert {p.name for p in GOLDEN.glob("*.sh")} == expected


def test_shell_values_are_quoted():
    ctx = ScriptContext(**{**CTX.__dict__, "launch_argv": ("/x/jupyterhub-singleuser", "--name=a b;id")})
    req = golden_request(SITES["local"], "cpu", "workbench")
    assert "'--name=a b;id'" in render_batch_script(req, SITES["local"], ctx)


@pytest.mark.parametrize("bad", ["a b", "x\n#SBATCH --qos=admin", "", "$(id)", "a'b"])
def test_sbatch_lines_refuse_anything_but_plain_tokens(bad):
    with pytest.raises(ScriptError):
        sbatch_value(bad)


def test_a_home_with_a_space_is_refused_not_written():
    ctx = ScriptContext(**{**CTX.__dict__, "home": "/home/a b"})
    with pytest.raises(ScriptError):
        render_batch_script(golden_request(SITES["local"], "cpu", "workbench"), SITES["local"], ctx)


def test_environment_names_are_checked():
    ctx = ScriptContext(**{**CTX.__dict__, "export_names": ("JUPYTERHUB_X,ALL",)})
    with pytest.raises(ScriptError):
        render_batch_script(golden_request(SITES["local"], "cpu", "workbench"), SITES["local"], ctx)


def test_a_reverse_reach_job_hands_its_credential_to_the_tunnel_only():
    site = SITES["lumi"]
    script = render_batch_script(
        golden_request(site, "small-g", "lumi-stack"), site, golden_context(site, "lumi-stack")
    )
    tunnel, unset = script.index("aifa_workbench.extensions.reverse_tunnel"), script.index("unset AIFA_TUNNEL_KEY")
    server = script.index("jupyterhub-singleuser")
    assert script.index(". /users/alice/.aifa-workbench/job-env-") < tunnel < unset < server
    assert "AIFA_WORKBENCH_PORT_FILE" in script[:server]
    assert script.index('kill -TERM "$tunnel"') > server


def test_a_forward_reach_job_trusts_the_hubs_ca_for_its_server_and_end_report_only():
    site = SITES["jupiter"]
    ctx = ScriptContext(**{**golden_context(site, "stages-2026").__dict__, "hub_ca": True})
    script = render_batch_script(golden_request(site, "booster", "stages-2026"), site, ctx)
    sourced, written = script.index(". /e/home/jusers/alice/"), script.index('> "$hub_ca_dir/ca.pem"')
    unset, server = script.index("unset AIFA_WORKBENCH_HUB_CA_PEM"), script.index("jupyterhub-singleuser")
    assert sourced < written < unset < script.index("module load") and unset < server
    server_line = script[script.rindex("\n", 0, server) + 1 : script.index("\n", server)]
    assert server_line.startswith(f"{ctx.venv_bin}/python -m aifa_workbench.extensions.hub_trust ")
    assert "SSL_CERT" not in script  # hub_trust sets it for JupyterLab alone
    assert script.index("job_report") < script.index('rm -rf "$hub_ca_dir"')


def test_in_a_container_the_hubs_ca_is_pinned_inside_the_image_after_its_environment():
    site = SITES["lumi"]
    ctx = ScriptContext(**{**golden_context(site, "pytorch-container").__dict__, "hub_ca": True})
    script = render_batch_script(golden_request(site, "small-g", "pytorch-container"), site, ctx)
    assert "bash -c 'source \"$0/bin/activate\" && export PATH=\"$AIFA_WORKBENCH_RELAY_BIN:$PATH\"" in script
    launch = script[script.index("singularity run") :]
    assert launch.index("python -m aifa_workbench.extensions.hub_trust") < launch.index("jupyterhub-singleuser")


def test_the_slurm_relay_runs_on_the_node_and_only_where_the_helpers_do():
    """The relay runs the node's Slurm for a notebook in an image: from the node's runtime. Where a
    site has no runtime of the node's own, the helpers run in the image, where no Slurm is: then
    no relay, and the wrapper puts nothing on the server's PATH (an empty entry is the cwd)."""
    site = SITES["lumi"]
    ctx = golden_context(site, "pytorch-container")
    script = render_batch_script(golden_request(site, "small-g", "pytorch-container"), site, ctx)
    relay = next(line for line in script.splitlines() if "extensions.slurm_relay serve" in line)
    assert relay.startswith("/appl/local/aifa-workbench/envs/lumi-stack/current/bin/python -m ")
    assert 'kill -TERM "$slurm_relay"' in script and "AIFA_WORKBENCH_RELAY_BIN:$PATH" in script
    in_image = dataclasses.replace(ctx, venv_bin=f"{ctx.container_runtime}/bin")
    script = render_batch_script(golden_request(site, "small-g", "pytorch-container"), site, in_image)
    assert "slurm_relay" not in script and "RELAY_BIN" not in script
    assert "bash -c 'source \"$0/bin/activate\" && exec \"$@\"' " in script


def _cache_lines(scratch: str) -> str:
    """The job-script lines that put the caches on the project's scratch (LUMI's script)."""
    site = SITES["lumi"]
    ctx = dataclasses.replace(golden_context(site, "lumi-stack"), scratch_dir=scratch)
    script = render_batch_script(golden_request(site, "small-g", "lumi-stack"), site, ctx)
    start = script.index("folder_is_held() {")
    return script[start : script.index("\nfi\n", start) + 4]


def _caches_with(scratch) -> tuple[str, str]:
    """(TORCH_HOME|HF_HOME, the job log's line) when the job's lines run with this scratch."""
    check = _cache_lines(str(scratch)) + '\nprintf "%s|%s" "${TORCH_HOME:-}" "${HF_HOME:-}"'
    env = {"USER": "alicelum", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-euc", check], env=env, capture_output=True, text=True, check=True)
    said, _, caches = done.stdout.rpartition("\n")
    return caches, said


def test_the_caches_stay_in_the_home_where_the_project_may_rename_folders_in_its_scratch(tmp_path):
    """A project's scratch is its group's to write in (2770, LUMI's): another member could move the
    user's folder away after the job's check and put a link to theirs in its place, and PyTorch
    would run their code. Only a sticky scratch, or one no one else may write in, holds caches."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o2770)
    caches, said = _caches_with(scratch)
    assert caches == "|" and "stay in your home" in said and str(scratch) in said
    assert not (scratch / "alicelum").exists()

    scratch.chmod(0o3770)  # sticky: only a folder's owner may rename it
    assert _caches_with(scratch) == (f"{scratch}/alicelum/torch|{scratch}/alicelum/huggingface", "")
    assert oct((scratch / "alicelum").stat().st_mode & 0o777) == "0o700"

    (scratch / "alicelum").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (scratch / "alicelum").symlink_to(tmp_path / "elsewhere")  # another member's link, made first
    caches, said = _caches_with(scratch)
    assert caches == "|" and "not a folder of yours" in said


def test_a_folder_the_user_opened_to_the_project_or_one_holding_anothers_cache_is_not_used(tmp_path):
    """The user's own folder in a sticky scratch, left open to the group (2770, a 002 umask):
    another member may have put a link to their code under `torch` there. Used only when it is
    the user's alone, and nothing in it under the caches' names is a link or someone else's."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o3770)
    mine = scratch / "alicelum"
    mine.mkdir()
    mine.chmod(0o2770)
    (tmp_path / "evil").mkdir()
    (mine / "torch").symlink_to(tmp_path / "evil")
    caches, said = _caches_with(scratch)
    assert caches == "|" and "not a folder of yours alone" in said
    assert oct(mine.stat().st_mode & 0o7777) == "0o2770"  # not repaired behind the user's back
    mine.chmod(0o700)
    assert _caches_with(scratch)[0] == "|"  # the link is still there
    (mine / "torch").unlink()
    (mine / "torch").mkdir()
    assert _caches_with(scratch)[0] == f"{mine}/torch|{mine}/huggingface"


def test_the_caches_follow_no_link_and_every_folder_above_them_must_be_held(tmp_path):
    """The path exported is the physical one, and a folder above the scratch that others may
    write in (not sticky) disqualifies it as well."""
    shared = tmp_path / "shared"
    (shared / "scratch").mkdir(parents=True)
    (tmp_path / "link").symlink_to(shared / "scratch")
    shared.chmod(0o755)
    caches, _ = _caches_with(tmp_path / "link")
    assert caches == f"{shared}/scratch/alicelum/torch|{shared}/scratch/alicelum/huggingface"
    shared.chmod(0o777)
    assert _caches_with(tmp_path / "link")[0] == "|"
