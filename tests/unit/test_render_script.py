"""`aifa-workbench render-script` prints exactly the batch script the hub submits: the spawner,
configured from the same settings file, started as the hub starts it, hands the same script to sbatch."""

import asyncio
from types import SimpleNamespace

import pytest
import yaml
from jupyterhub.objects import Server
from traitlets.config import Config

from aifa_workbench.hub_config.cli import main
from aifa_workbench.hub_config.script_preview import ENV_FILE_PLACEHOLDER
from aifa_workbench.hub_config.site_accounts.registry import registry_of
from aifa_workbench.hub_config.spawner_settings import spawner_traits
from aifa_workbench.model.settings import load_settings
from aifa_workbench.spawners import slurm as slurm_mod, submission
from aifa_workbench.spawners.reach import ReverseReach
from aifa_workbench.spawners.slurm import WorkbenchSlurmSpawner

SETTINGS = {
    "bind_url": "https://workbench.example.org/",
    "hub_port": 8081,
    "proxy_api_port": 8001,
    "tls_cert_file": "/etc/aifa-workbench/tls.pem",
    "tls_key_file": "/etc/aifa-workbench/tls.key",
    "state_dir": "/var/lib/aifa-workbench",
    "secrets_dir": "/etc/aifa-workbench/secrets",
    "venv_dir": "/srv/workbench-venv",
    "demo_users": ["alice"],
    "admin_users": ["alice"],
    "sites": ["local", "lumi"],
    "default_site": "local",
    "hub_id": "test1",
    "walltime_warnings_minutes": [15, 5],
    "site_users": {"alice": {"lumi": {"username": "alicelum", "accounts": ["project_465000123"]}}},
}


class Submitted(Exception):
    """What the spawner handed to sbatch (raised instead of submitting)."""

    def __init__(self, user, script, env_file):
        super().__init__(user)
        self.user, self.script, self.env_file = user, script, env_file


class HubSide:
    """A site's answers to the hub's spawner (its job control), and its sbatch, which keeps the script."""

    site_name, site_title = "local", "Test cluster"

    def query_user(self, hub_user):
        return None

    async def accounts(self, user, site_user=None):
        return ("proj_sme",)

    async def reservations_listing(self, as_user=None):
        return ""

    async def budgets(self, user, accounts, site_user=None):
        return {}

    async def project_file(self, user, path, account):
        return "{}"

    async def home(self, user, storage=None):
        from aifa_workbench.sites.home import HomeReport

        # what the site's login shell says ($HOME), and that the project's folders are there
        return HomeReport("/users/alicelum", storage=tuple((storage or {}).items()))

    async def submit(self, user, script, env=None, env_file=None):
        raise Submitted(user, script, env_file)


class HubsSpawner(WorkbenchSlurmSpawner):
    registry = None  # the hub's site accounts, as the hub's runtime hands them to its spawners

    def control_of(self, site_name):
        return HubSide()

    @property
    def identities(self):
        from aifa_workbench.sites.registry import Identities

        return Identities(self.registry, key_store=None)


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_mod.pwd, "getpwnam", lambda name: SimpleNamespace(pw_dir=f"/srv/homes/{name}"))
    monkeypatch.setattr(submission, "check_runtime", no_runtime_check)
    monkeypatch.setattr(ReverseReach, "job_env", lambda reach: {"AIFA_TUNNEL_KEY": "secret key"})
    path = tmp_path / "workbench.yaml"
    # a state directory of the test's own: a start keeps what the site said in its registry there
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    path.write_text(yaml.safe_dump({**SETTINGS, "state_dir": str(tmp_path / "state")}))
    return path


async def no_runtime_check(*args):
    return None


def submitted_by_the_hub(settings_path, options: dict) -> Submitted:
    """The script the hub's spawner submits for alice's `options`, configured as jupyterhub_config.py does."""
    traits = spawner_traits(load_settings(settings_path))
    user = SimpleNamespace(name="alice", escaped_name="alice", url="/user/alice/", db=None, groups=[])
    hub = SimpleNamespace(
        api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", public_host="workbench.example.org"
    )
    spawner = HubsSpawner(
        config=Config({"WorkbenchSlurmSpawner": traits}),
        user=user,
        hub=hub,
        cookie_options={"secure": True},
        api_token="the-token",
    )
    spawner.server = Server(base_url="/user/alice/")
    spawner.registry = registry_of(load_settings(settings_path))  # where a start keeps what the site said
    spawner.user_options = options
    with pytest.raises(Submitted) as submitted:
        asyncio.run(spawner.start())
    return submitted.value


def rendered(capsys, settings_path, *args, home: str | None = "/users/alicelum") -> str:
    """render-script's script; on a remote site with the home the site gave (the hub reads it at a
    start; the admin gives it here, or the hub's registry has it)."""
    given = ["--home", home] if home and "lumi" in args else []
    assert main(["render-script", "--settings", str(settings_path), "--user", "alice", *given, *args]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("# ") or "\n# " in err  # the request's cost
    return out


def test_a_lumi_script_is_the_one_the_hub_submits(capsys, settings_file):
    options = {"site": "lumi", "partition": "small-g", "gpus": 2, "hours": 3}
    hubs = submitted_by_the_hub(settings_file, options)
    out = rendered(
        capsys, settings_file, "--site", "lumi", "--options", '{"partition": "small-g", "gpus": 2, "hours": 3}'
    )
    random_part = hubs.env_file[0].rsplit("job-env-", 1)[1]
    assert out == hubs.script.replace(random_part, ENV_FILE_PLACEHOLDER)
    assert "#SBATCH --export=NONE\n" in out and "#SBATCH --chdir=/users/alicelum\n" in out
    assert f"/users/alicelum/.aifa-workbench/job-env-{ENV_FILE_PLACEHOLDER}" in out
    assert "#SBATCH --account=project_465000123\n" in out and "aifa-wb-test1-alice" in out
    # the project's folders the site said at the start it has: kept in the registry, previewed alike
    assert "export AIFA_WORKBENCH_SCRATCH_DIR=/scratch/project_465000123\n" in out
    assert "/srv/workbench-venv" not in out and "/appl/local/aifa-workbench/envs/lumi-stack/current/bin" in out
    assert "reverse_tunnel" in out and "the-token" not in out and "secret key" not in out


def test_a_local_script_is_the_one_the_hub_submits(capsys, settings_file):
    options = {"partition": "cpu", "account": "proj_sme", "hours": 2}
    hubs = submitted_by_the_hub(settings_file, options)
    out = rendered(capsys, settings_file, "--options", '{"partition": "cpu", "account": "proj_sme", "hours": 2}')
    assert out == hubs.script and hubs.env_file is None
    assert "#SBATCH --chdir=/srv/homes/alice\n" in out and "/srv/workbench-venv/bin/jupyterhub-singleuser" in out
    assert "JUPYTERHUB_COOKIE_OPTIONS" in out and "JUPYTERHUB_SERVICE_PREFIX" in out and "the-token" not in out


def test_without_a_settings_file_it_says_so_and_uses_the_spawners_defaults(capsys, tmp_path):
    assert (
        main(
            [
                "render-script",
                "--settings",
                str(tmp_path / "none.yaml"),
                "--user",
                "alice",
                "--home",
                "/users/alice",
                "--site",
                "lumi",
                "--options",
                '{"partition": "small-g"}',
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert f"no readable settings file {tmp_path / 'none.yaml'}: the spawner's defaults" in err
    assert "#SBATCH --chdir=/users/alice\n" in out and "#SBATCH --account=project_465000123\n" in out
    assert "--export=NONE" in out and "/opt/aifa-workbench/venv" not in out


def test_the_admins_account_is_taken_and_a_refusal_is_the_hubs_sentence(capsys, settings_file):
    assert (
        main(
            [
                "render-script",
                "--settings",
                str(settings_file),
                "--user",
                "alice",
                "--home",
                "/users/alicelum",
                "--site",
                "lumi",
                "--options",
                '{"partition": "small-g", "account": "project_1"}',
            ]
        )
        == 0
    )
    assert "#SBATCH --account=project_1\n" in capsys.readouterr().out  # the admin's word: her project
    assert (
        main(
            [
                "render-script",
                "--settings",
                str(settings_file),
                "--user",
                "alice",
                "--site",
                "lumi",
                "--options",
                '{"partition": "small-g", "gpus": 99}',
            ]
        )
        == 2
    )
    assert "aifa-workbench: 'gpus' must be from" in capsys.readouterr().err


def test_only_render_script_loads_the_hubs_spawner():
    """The long-lived commands (log-to, tunneld, run-proxy) stay light: the spawner, JupyterHub and
    batchspawner load for render-script alone; its help names the env file as the script shows it."""
    import subprocess
    import sys

    from aifa_workbench.hub_config import cli

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, aifa_workbench.hub_config.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jupyterhub', 'batchspawner')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]"
    assert cli.ENV_FILE_SHOWN == ENV_FILE_PLACEHOLDER


def test_a_site_account_the_hubs_registry_holds_is_the_one_rendered(capsys, settings_file, tmp_path):
    """An admin gave alice another LUMI username on /hub/site-accounts: the hub submits as that one,
    and so does render-script (it reads the hub's registry, not the settings' site_users alone)."""
    registry = registry_of(load_settings(settings_file))
    registry.set_kept("alice", "lumi", {"username": "alice2lum", "accounts": ["project_465000999"]})
    options = ("--site", "lumi", "--options", '{"partition": "small-g", "gpus": 1}')
    # the home LUMI gave her former account is not hers now: render-script asks for it
    registry.remember_home("alice", "lumi", "alicelum", "/users/alicelum")
    assert main(["render-script", "--settings", str(settings_file), "--user", "alice", *options]) == 2
    assert "The home of alice2lum on LUMI (Finland) · AMD MI250X is not known yet" in capsys.readouterr().err
    registry.remember_home("alice", "lumi", "alice2lum", "/users/alice2lum")  # as a start there reads it
    out = rendered(capsys, settings_file, *options, home=None)
    assert "#SBATCH --chdir=/users/alice2lum\n" in out and "#SBATCH --account=project_465000999\n" in out
    assert "alicelum" not in out


def test_a_full_home_on_the_site_refuses_the_start_with_the_sites_sentence_before_anything_is_written(
    settings_file, monkeypatch
):
    from aifa_workbench.sites.home import HomeReport, HomeUnusable

    async def full_home(self, user, storage=None):
        raise HomeUnusable("LUMI (Finland) · AMD MI250X", HomeReport("/users/alicelum", "full", "Disk quota exceeded"))

    monkeypatch.setattr(HubSide, "home", full_home)
    with pytest.raises(Exception) as refused:  # JupyterHub's spawn error, the sentence as its message
        submitted_by_the_hub(settings_file, {"site": "lumi", "partition": "small-g", "gpus": 1})
    assert "Your home on LUMI (Finland) · AMD MI250X (/users/alicelum) is full" in str(refused.value)
    assert not isinstance(refused.value, Submitted)
