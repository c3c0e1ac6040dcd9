"""The simulated sites `make sites` starts: what a test needs to reach them as the hub does."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import requests

from aifa_workbench.sites.control import JobControl
from aifa_workbench.sites.ssh import Credential, LoginNode, SshRunner

SITES_ROOT = Path("/var/lib/aifa-sites")
SIMSITE = "/usr/local/sbin/aifa-simsite"
# hub user -> site user, as in ansible/roles/sim_sites/defaults/main.yml
SITE_USERS = {
    "lumi": {"alice": "alicelum", "bob": "boblumi"},
    "jupiter": {"alice": "alice1", "bob": "bob7"},
    "lucia": {"alice": "acolin", "bob": "bdurand"},
}
SITE_ACCOUNTS = {
    "lumi": {"alice": ("project_465000123",)},
    "jupiter": {"alice": ("aifabe",)},
    "lucia": {"alice": ("aifa_cat1",)},
}
# the keys of the simulated sites' settings file a test hub takes over
SIM_KEYS = (
    "sites",
    "catalogue_dir",
    "runtime_owners",
    "site_users",
    "hub_bind_address",
    "hub_egress_addresses",
    "start_timeout",
)
SITE_NODES = {"lumi": "nid005001", "jupiter": "jpbo-001-01", "lucia": "lucia-gpu001"}
# every compute node of each site: JUPITER has a second booster node (whole nodes: a Dask worker
# needs one of its own), where a job lands when the first is taken
SITE_ALL_NODES = {
    "lumi": ("nid005001",),
    "jupiter": ("jpbo-001-01", "jpbo-001-02", "jpbo-001-03", "jpbo-001-04"),
    "lucia": ("lucia-gpu001",),
}
# a Python of each site, as its modules give it (none is on a site's default PATH)
SITE_PYTHON = {
    "lumi": "/opt/cray/pe/python/3.11.7/bin/python3",
    "jupiter": "/e/software/stages/2026/software/Python/3.13.5-GCCcore-14.3.0/bin/python3",
    "lucia": "/opt/easybuild/software/Python/3.11.3-GCCcore-12.3.0/bin/python3",
}


# Every packet between the hub's side and the site dropped (in the site's namespace):
# `ip netns exec aifa-<site> nft -f -` this; heal with `nft delete table inet aifa_partition`.
PARTITION = """table inet aifa_partition {
  chain in { type filter hook input priority -10; policy accept; iifname "eth0" drop; }
  chain out { type filter hook output priority -10; policy accept; oifname "eth0" drop; }
}"""


def partition(name: str) -> None:
    subprocess.run(["ip", "netns", "exec", f"aifa-{name}", "nft", "-f", "-"], input=PARTITION, text=True, check=True)


def heal(name: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", f"aifa-{name}", "nft", "delete", "table", "inet", "aifa_partition"], check=True
    )


def answers_through_the_proxy(hub, token, timeout=3, user="alice") -> bool:
    try:
        r = requests.get(
            hub.server_url(user) + "api/status", headers={"Authorization": f"token {token}"}, timeout=timeout
        )
        return r.status_code == 200
    except requests.RequestException:
        return False


def site_env(name: str) -> dict:
    env = {}
    for line in (SITES_ROOT / name / "site.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip('"')
    return env


def site_argv(name: str, user: str | None = None) -> list[str]:
    """The argv prefix that runs a command on the site's login node, in its userland (as `user`)."""
    return [SIMSITE, "exec", str(SITES_ROOT / name), *(["-u", user] if user else [])]


def on_site_fs(name: str, site_path: str) -> Path:
    """Where a path of the site's shared file systems (a home, /scratch/...) is on this host."""
    return SITES_ROOT / name / "fs" / site_path.lstrip("/")


def in_site(name: str, argv, **kwargs) -> subprocess.CompletedProcess:
    """A command on the site's login node, as root, in the site's own userland (its root, its file
    systems): its paths are the site's, not this host's."""
    return subprocess.run([*site_argv(name), *argv], capture_output=True, text=True, **kwargs)


def bring_up(name: str) -> None:
    """aifa-simsite up: what it printed is the failure's message when it fails."""
    done = subprocess.run([SIMSITE, "up", str(SITES_ROOT / name)], capture_output=True, text=True)
    assert done.returncode == 0, f"aifa-simsite up {name} exited {done.returncode}: {done.stdout}{done.stderr}"


def site_runtime(name: str) -> str:
    from aifa_workbench.model.catalogue import load_catalogue

    return load_catalogue(SITES_ROOT / "catalogue", [name])[name].paths.runtime


def sites_cli(*args: str, settings: Path = SITES_ROOT / "workbench-sites.yaml") -> subprocess.CompletedProcess:
    """`aifa-workbench ARGS` as the hub's user, with `settings` (make sites' by default)."""
    return subprocess.run(
        [
            "runuser",
            "-u",
            "aifa-hub",
            "--",
            "env",
            f"AIFA_WORKBENCH_SETTINGS={settings}",
            "/opt/aifa-workbench/venv/bin/aifa-workbench",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def site_passwd(name: str, hub_user: str) -> list[str]:
    """The line of `hub_user`'s account in the site's own passwd, split."""
    site_user = SITE_USERS[name][hub_user]
    for line in (SITES_ROOT / name / "root" / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == site_user:
            return fields
    raise KeyError(site_user)


def site_home(name: str, hub_user: str) -> str:
    """The home of `hub_user`'s account on the site, as the site's own passwd says."""
    return site_passwd(name, hub_user)[5]


def kill_ssh_sessions(name: str, hub_user: str) -> None:
    """Kill the sshd processes serving `hub_user`'s account on the site's login node (by its uid:
    under qemu, JUPITER's sshd cannot retitle itself `sshd-session: <user>`)."""
    uid = site_passwd(name, hub_user)[2]
    subprocess.run(["pkill", "-KILL", "-U", uid, "-f", "sshd"], check=True)


def site_is_up(name: str) -> bool:
    return subprocess.run([SIMSITE, "status", str(SITES_ROOT / name)], capture_output=True).returncode == 0


@dataclass
class SimSite:
    name: str
    login: LoginNode
    keys: dict  # hub user -> private key, authorized on the site for their site user

    def credential(self, hub_user: str) -> Credential:
        return Credential(SITE_USERS[self.name][hub_user], self.keys[hub_user])

    def runner(self, **options) -> SshRunner:
        return SshRunner(f"Simulated {self.name}", self.login, self.credential, **options)

    def control(self, **options) -> JobControl:
        return JobControl(
            self.name, f"Simulated {self.name}", self.runner(**options), "/usr/bin", timeout=20, shared_queries=False
        )

    def home(self, hub_user: str) -> str:
        return site_home(self.name, hub_user)


def authorize(name: str, site_user: str, key: asyncssh.SSHKey) -> None:
    authorize_line(name, site_user, key.export_public_key().decode())


def authorize_line(name: str, site_user: str, public_key: str) -> None:
    """What the site's portal does with a public key a user gives it (aifa-simsite authorize)."""
    subprocess.run(
        [SIMSITE, "authorize", str(SITES_ROOT / name), site_user],
        input=public_key,
        text=True,
        check=True,
        capture_output=True,
    )


def sim_site(name: str) -> SimSite:
    if not site_is_up(name):
        pytest.fail(f"the simulated site {name} is not up: run `make sites`")
    env = site_env(name)
    host_key = (SITES_ROOT / name / "ssh" / "ssh_host_ed25519_key.pub").read_text().strip()
    keys = {}
    for hub_user, site_user in SITE_USERS[name].items():
        keys[hub_user] = asyncssh.generate_private_key("ssh-ed25519")
        authorize(name, site_user, keys[hub_user])
    return SimSite(name, LoginNode(f"10.77.{env['INDEX']}.2", 22, (host_key,)), keys)
