"""Job control of the simulated sites over SSH, from the hub's side (outside every site's
namespace): real sshd login nodes, real Slurm clusters of their own, site users unlike the hub's."""

import asyncio
import os
import shlex
import signal
import subprocess
import time

import asyncssh
import pytest

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.sites.errors import CredentialRefused, HostKeyMismatch, SiteUnreachable, SlurmRefused
from aifa_workbench.sites.ssh import LoginNode, SshRunner

from .sim_sites import (
    SITE_ACCOUNTS,
    SITE_ALL_NODES,
    SITE_USERS,
    SITES_ROOT,
    bring_up,
    in_site,
    sim_site,
    site_runtime,
    sites_cli,
)

pytestmark = pytest.mark.sites
SITES = ("lumi", "jupiter", "lucia")


@pytest.fixture(scope="module", params=SITES)
def site(request):
    return sim_site(request.param)


@pytest.fixture(scope="module")
def lumi():
    return sim_site("lumi")


async def test_a_job_runs_as_the_sites_user_on_the_sites_node_with_the_sites_home(site):
    control = site.control()
    await control.ping("alice")
    assert await control.accounts("alice", SITE_USERS[site.name]["alice"]) == SITE_ACCOUNTS[site.name]["alice"]
    home = site.home("alice")
    script = (
        "#!/bin/bash\n#SBATCH --time=1\n#SBATCH --gres=gpu:1\n"
        f"#SBATCH --output={home}/probe-%j.out\n"
        "echo \"$(id -un) $(hostname) $HOME $SLURM_CLUSTER_NAME\"; find /opt/aifa-workbench /home -mindepth 1 2>/dev/null | grep -q . && echo HUBPATH; true\n"
    )
    job_id = await control.submit("alice", script)
    for _ in range(60):
        info = (await control.jobs([job_id], as_user="alice"))[job_id]
        if not info.active:
            break
        await asyncio.sleep(0.5)
    assert info.state in ("COMPLETED", "GONE"), info
    output = await control.tail("alice", f"{home}/probe-{job_id}.out", 4096)
    user, node, job_home, cluster = output.split()
    assert (user, job_home, cluster) == (SITE_USERS[site.name]["alice"], home, site.name), output
    assert node in SITE_ALL_NODES[site.name], output


async def test_argv_crosses_the_login_shell_intact_and_runs_nothing_else(lumi):
    runner = lumi.runner()
    nasty = ["a b", "it's", "$HOME", "; touch /tmp/aifa-pwned", "`id`", "tab\there", "new\nline", "*", ""]
    result = await runner.run(["printf", "%s|", *nasty], as_user="alice")
    assert result.ok and result.stdout == "|".join(nasty) + "|"
    assert not os.path.exists("/tmp/aifa-pwned")
    assert (await runner.run(["sh", "-c", "exit 3"], as_user="alice")).returncode == 3


async def test_a_users_commands_share_one_connection_below_max_sessions(lumi):
    runner = lumi.runner(max_channels=8)
    for burst in range(3):  # bursts back to back: sshd frees a closed session's slot a moment late
        results = await asyncio.gather(*(runner.run(["true"], as_user="alice") for _ in range(40)))
        assert all(r.ok for r in results), burst
    assert runner.connection_for("alice").connects == 1  # 120 commands, one login (sshd MaxSessions 10)


async def test_a_changed_host_key_is_refused_with_a_sentence(lumi):
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    runner = SshRunner("Simulated lumi", LoginNode(lumi.login.host, 22, (impostor,)), lumi.credential)
    with pytest.raises(HostKeyMismatch) as refused:
        await runner.run(["true"], as_user="alice")
    assert "presented a host key that is not the one the workbench knows" in refused.value.sentence


async def test_a_key_the_site_does_not_know_is_refused(lumi):
    from aifa_workbench.sites.ssh import Credential

    stranger = Credential("alicelum", asyncssh.generate_private_key("ssh-ed25519"))
    runner = SshRunner("Simulated lumi", lumi.login, lambda user: stranger)
    with pytest.raises(CredentialRefused):
        await runner.run(["true"], as_user="alice")


def sshd_sessions_of(site_user: str) -> list[int]:
    # the site's OpenSSH (10, trixie) names a session process sshd-session, an older one sshd
    out = subprocess.run(["pgrep", "-f", f"^sshd(-session)?: {site_user}"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


async def test_a_killed_connection_is_made_again_on_the_next_command(lumi):
    runner = lumi.runner()
    assert (await runner.run(["true"], as_user="bob")).ok
    for pid in sshd_sessions_of("boblumi"):
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    try:
        await runner.run(["true"], as_user="bob")  # may notice the loss itself
    except SiteUnreachable:
        pass
    result = await runner.run(["echo", "back"], as_user="bob")
    assert result.stdout == "back\n" and runner.connection_for("bob").connects == 2


async def test_users_cannot_see_or_cancel_each_others_jobs(lumi):
    control = lumi.control()
    job_id = await control.submit("alice", "#!/bin/bash\n#SBATCH --time=2\n#SBATCH --output=/dev/null\nsleep 60\n")
    try:
        assert (await control.jobs([job_id], as_user="alice"))[job_id].active
        assert (await control.jobs([job_id], as_user="bob"))[job_id].state == "GONE"  # PrivateData=jobs
        with pytest.raises(SlurmRefused):
            await control.cancel("bob", job_id)
        assert (await control.jobs([job_id], as_user="alice"))[job_id].active
    finally:
        await control.cancel("alice", job_id)


async def test_a_purged_job_is_gone(lumi):
    control = lumi.control()
    assert (await control.jobs(["987654"], as_user="alice"))["987654"].state == "GONE"


async def test_a_stopped_login_node_is_unreachable_then_recovers_by_itself(lumi):
    runner = lumi.runner(connect_timeout=3, max_backoff=1)
    assert (await runner.run(["true"], as_user="alice")).ok
    pidfile = SITES_ROOT / "lumi" / "root" / "run" / "aifa" / "sshd.pid"
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    for pid in sshd_sessions_of("alicelum"):
        os.kill(pid, signal.SIGKILL)
    try:
        with pytest.raises(SiteUnreachable) as down:
            for _ in range(3):
                await runner.run(["true"], as_user="alice")
                await asyncio.sleep(0.3)
        assert "cannot be reached right now" in down.value.sentence
    finally:
        bring_up("lumi")
    deadline = time.monotonic() + 10
    while True:
        try:
            assert (await runner.run(["true"], as_user="alice")).ok
            break
        except SiteUnreachable:
            assert time.monotonic() < deadline, "the login node came back but the runner did not"
            await asyncio.sleep(0.5)


async def test_a_catalogue_site_is_reached_through_the_registry_with_the_hub_users_own_key(tmp_path):
    from aifa_workbench.hub_config.site_keys.store import SiteKeyStore
    from aifa_workbench.sites.registry import Identities, NoSiteAccount, SiteControls

    from .sim_sites import SITES_ROOT as root, authorize_line

    store = SiteKeyStore(tmp_path / "keys", "a secret")
    authorize_line("jupiter", "alice1", store.public_key("alice", "jupiter"))  # the user, in JuDoor
    controls = SiteControls(Identities({"alice": {"jupiter": {"username": "alice1", "accounts": ["aifabe"]}}}, store))
    jupiter = load_catalogue(root / "catalogue", ["jupiter"])["jupiter"]
    control = controls.of(jupiter)
    await control.ping("alice")
    assert await control.accounts("alice", "alice1") == ("aifabe",)
    whoami = await control.runner.run(["id", "-un"], as_user="alice")
    assert whoami.stdout == "alice1\n"
    with pytest.raises(NoSiteAccount) as unknown:
        await control.ping("carol")
    assert "does not know your account on" in unknown.value.sentence


def test_each_site_runs_the_job_runtime_of_this_hubs_code():
    """make sites installed it (aifa-workbench install-runtime, over SSH as the runtime's owner)."""
    for name in SITES:
        result = sites_cli("check-runtime", name)
        assert result.returncode == 0, result.stdout + result.stderr
        site = load_catalogue(SITES_ROOT / "catalogue", [name])[name]
        for environment in site.environments.values():
            # as a user would start it: after the environment's modules, inside its image
            server = f"{site_runtime(name)}/envs/{environment.slug}/current/bin/jupyterhub-singleuser"
            if environment.container:
                server = shlex.join(
                    ["singularity", "exec", "--bind", site_runtime(name), environment.container, server]
                )
            script = "\n".join([*environment.setup, f"{server} --version"])
            found = in_site(
                name, ["runuser", "-u", SITE_USERS[name]["alice"], "--", "bash", "-lc", script], timeout=600
            )
            assert found.stdout.strip().splitlines()[-1:] == ["6.1.1"], (environment.slug, found.stderr)


def test_no_user_of_a_site_can_change_the_runtime_every_users_job_runs():
    """The runtime is the owner's alone: a user of the site (alice's account) can neither add nor
    replace anything in it (a .pth in a base runs in every job's Python), and nothing in it is
    writable by its group or by others."""
    for name in SITES:
        runtime_dir = site_runtime(name)
        loose = in_site(name, ["find", runtime_dir, "!", "-type", "l", "-perm", "/022"], timeout=120)
        assert loose.returncode == 0 and loose.stdout == "", (name, loose.stdout[:500], loose.stderr[-300:])
        env = f"{runtime_dir}/envs/" + next(iter(load_catalogue(SITES_ROOT / "catalogue", [name])[name].environments))
        tries = [
            f"touch {env}/base-x",
            f"ln -sfn /tmp {env}/current",
            f"echo 'import os' > \"$(ls -d {env}/base-*/lib/python*/site-packages | head -1)\"/evil.pth",
        ]
        for attempt in tries:
            tried = in_site(name, ["runuser", "-u", SITE_USERS[name]["alice"], "--", "bash", "-c", attempt])
            assert tried.returncode != 0, (name, attempt)
        assert in_site(name, ["test", "-d", f"{env}/current/bin"]).returncode == 0


# alice's project's folders on each site (she and carol are in it, bob is not)
ALICES_PROJECT_DIRS = {
    "lumi": ("project_465000123", ["/project/project_465000123", "/scratch/project_465000123"]),
    "jupiter": ("aifabe", ["/e/project1/aifabe", "/e/scratch/aifabe"]),
    "lucia": ("aifa_cat1", ["/gpfs/projects/aifa_cat1"]),
}


def test_a_projects_folders_are_its_members_alone():
    """As on the real sites, a project's folders belong to its Unix group (2770): a user of
    another project can neither list nor write there, whatever the hub does; a member can, and
    what a member makes there stays the project's."""
    for name in SITES:
        project, folders = ALICES_PROJECT_DIRS[name]
        for folder in folders:
            as_bob = in_site(
                name, ["runuser", "-u", SITE_USERS[name]["bob"], "--", "bash", "-c", f"ls {folder} || touch {folder}/x"]
            )
            assert as_bob.returncode != 0, (name, folder)
            made = in_site(
                name,
                [
                    "runuser",
                    "-u",
                    SITE_USERS[name]["alice"],
                    "--",
                    "bash",
                    "-c",
                    f'f=$(mktemp {folder}/t.XXXX) && stat -c %G "$f" && rm -f "$f"',
                ],
            )
            assert made.returncode == 0 and made.stdout.strip() == project, (name, folder, made.stdout, made.stderr)


async def test_each_environments_python_is_what_the_site_says_it_is(lumi):
    """install-runtime builds for the interpreter each environment reports after its modules
    (inside its image): none of them is this host's, and JUPITER's is aarch64."""
    from aifa_workbench.sites import runtime

    expected = {
        ("lumi", "lumi-stack"): ("3.11", "x86_64"),  # cray-python
        ("lumi", "pytorch-container"): ("3.13", "x86_64"),  # the image's own
        ("jupiter", "stages-2026"): ("3.13", "aarch64"),  # the stage's, emulated here
        ("lucia", "easybuild-2023a"): ("3.11", "x86_64"),  # EasyBuild's
    }
    for name in SITES:
        site = sim_site(name)
        catalogue = load_catalogue(SITES_ROOT / "catalogue", [name])[name]
        runner = site.runner()
        try:
            for environment in catalogue.environments.values():
                found = await runtime.interpreter_of(runner, "alice", name, catalogue.paths.runtime, environment)
                assert (found.version, found.machine) == expected[(name, environment.slug)], found
                assert found.glibc == "2.41"  # trixie's, not this host's 2.36
        finally:
            runner.close()
    plain = await lumi.runner().run(["bash", "-lc", "command -v python3 || echo none"], as_user="alice")
    assert plain.stdout.strip() == "none"  # LUMI's default PATH has no usable python3


async def test_a_private_sites_orphans_are_found_through_the_users_own_login(lumi):
    from aifa_workbench.sites.slurm_cli import job_name
    from aifa_workbench.spawners.reconcile import find_own_orphans

    control = lumi.control()
    script = "#!/bin/bash\n#SBATCH --time=2\n#SBATCH --output=/dev/null\n#SBATCH --job-name={}\nsleep 60\n"
    orphan = await control.submit("alice", script.format(job_name("th1", "alice")))
    owned = await control.submit("alice", script.format(job_name("th1", "alice")))
    other_hub = await control.submit("alice", script.format(job_name("th2", "alice")))
    try:
        found = await find_own_orphans(control, "th1", "alice", "alicelum", lambda: {owned})
        assert found == [orphan]
    finally:
        for job_id in (orphan, owned, other_hub):
            await control.cancel("alice", job_id)


async def test_a_private_file_is_written_for_the_user_only_and_never_over_another(lumi):
    runner = lumi.runner()
    home = lumi.home("alice")
    path = f"{home}/.aifa-workbench/test-{os.getpid()}-{time.monotonic_ns()}"
    await runner.write_private("alice", path, "export JUPYTERHUB_API_TOKEN='s3cret'\n")
    try:
        mode = await runner.run(["stat", "-c", "%a %U", path, os.path.dirname(path)], as_user="alice")
        assert mode.stdout.split("\n")[:2] == ["600 alicelum", "700 alicelum"]
        with pytest.raises(OSError):
            await runner.write_private("alice", path, "again")  # never over an existing file
        ps = await runner.run(["ps", "-eo", "args"], as_user="alice")
        assert "s3cret" not in ps.stdout
    finally:
        await runner.run(["rm", "-f", path], as_user="alice")
