"""Start real hubs for tests: the project's jupyterhub_config.py, run by the hub's service user,
each hub with its own ports, base URL, state directory and secrets."""

from __future__ import annotations

import os
import pwd
import re
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
import yaml

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # test hubs with self-signed TLS

ROOT = Path(__file__).resolve().parents[2]
HUB_USER = "aifa-hub"
VENV = Path("/opt/aifa-workbench/venv")
INSTALLED_SETTINGS = Path("/etc/aifa-workbench/workbench.yaml")
TEST_HUBS_DIR = Path("/var/lib/aifa-workbench/test-hubs")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nobody listens on now, and never one this process handed out before: the kernel
    gives a port just closed again to the next bind(0) (two calls in a row once both said 44001)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


# Test hubs' API ports: the simulated LUMI's firewall lets its nodes dial these (and 8081, the
# installed hub's), as a real one lets them dial the hub's public URL (sim_sites_hub_ports).
HUB_API_PORTS = range(18100, 18200)


def free_hub_port() -> int:
    for port in random.sample(HUB_API_PORTS, len(HUB_API_PORTS)):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {HUB_API_PORTS} for a test hub's API")


def _own(path: Path, mode: int) -> None:
    entry = pwd.getpwnam(HUB_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


@dataclass
class Hub:
    name: str
    url: str  # the hub's public URL with base path, ending in "/"
    home: Path  # state dir, settings and secrets of this hub
    admin_token: str
    passwords: dict  # each demo user's own password
    admin_users: tuple = ()
    hub_id: str = ""  # in its job names: aifa-wb-<hub_id>-<user>
    subdomains: bool = True  # each user's server on <user>.localhost (the benchmark's baseline: False)
    proc: subprocess.Popen | None = None
    proxy_proc: subprocess.Popen | None = None
    tunneld_proc: subprocess.Popen | None = None
    tokens: dict = field(default_factory=dict)
    client_secret: str = ""  # the hub's secret at the suite's OIDC provider

    @property
    def log_path(self) -> Path:
        return self.home / "hub.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(
            method,
            self.url + "hub/api/" + path.lstrip("/"),
            headers=headers,
            timeout=kwargs.pop("timeout", 30),
            verify=False,
            **kwargs,
        )

    def user_token(self, username: str) -> str:
        if username not in self.tokens:
            r = self.api("POST", f"users/{username}/tokens", json={"note": "test", "expires_in": 3600})
            r.raise_for_status()
            self.tokens[username] = r.json()["token"]
        return self.tokens[username]

    def job_name(self, username: str) -> str:
        return f"aifa-wb-{self.hub_id}-{username}"

    def user_origin(self, username: str) -> str:
        """Each user's server lives on a host of its own: <user>.localhost."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{username}.{parts.hostname}:{parts.port}"

    @property
    def api_port(self) -> int:
        """The hub's own API port (settings hub_port), where the proxy and jobs call it."""
        return yaml.safe_load((self.home / "workbench.yaml").read_text())["hub_port"]

    def open_descriptors(self) -> int:
        """How many files and sockets the hub's process holds open now."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def server_url(self, username: str, server_name: str = "") -> str:
        parts = urlsplit(self.url)
        origin = self.user_origin(username) if self.subdomains else f"{parts.scheme}://{parts.netloc}"
        return f"{origin}{parts.path}user/{username}/" + (f"{server_name}/" if server_name else "")


def test_hub_id(name: str) -> str:
    """A test hub's id in its job names, known before it starts (tests submit jobs for it)."""
    return "t" + re.sub(r"[^a-z0-9]", "", name.lower())[:11]


def write_hub_files(
    name: str, base_path: str = "/", settings_overrides: dict | None = None, config_source: Path | None = None
) -> Hub:
    home = TEST_HUBS_DIR / f"{name}-{secrets.token_hex(3)}"
    (home / "secrets").mkdir(parents=True)
    values = {
        "proxy-auth-token": secrets.token_hex(32),
        "admin-api-token": secrets.token_hex(32),
        "demo-password": secrets.token_urlsafe(9),
        "admin-password": secrets.token_urlsafe(24),
        "site-keys-secret": secrets.token_hex(32),
        "oidc-client-secret": secrets.token_hex(32),
        "auth-state-key": secrets.token_hex(32),
    }
    for key, value in values.items():
        (home / "secrets" / key).write_text(value + "\n")
        _own(home / "secrets" / key, 0o400)
    # the machine's one tunnel gateway trusts the installed hub's CA: test hubs sign with it too
    installed_ca = INSTALLED_SETTINGS.parent / "secrets" / "tunnel-ca"
    if installed_ca.exists():
        shutil.copyfile(installed_ca, home / "secrets" / "tunnel-ca")
        _own(home / "secrets" / "tunnel-ca", 0o400)
    settings = yaml.safe_load(INSTALLED_SETTINGS.read_text())
    passwords = write_passwords(home / "secrets" / "passwords", settings["demo_users"])
    port = free_port()
    settings.update(
        bind_url=f"http://127.0.0.1:{port}{base_path}",
        public_host=f"http://localhost:{port}",
        user_domain="localhost",
        hub_port=free_hub_port(),
        proxy_api_port=free_port(),
        state_dir=str(home),
        secrets_dir=str(home / "secrets"),
        hub_id=test_hub_id(name),
        login="per-user-password",  # tests log in with passwords unless they start a provider (oidc_provider.py)
        idle_culler={"enabled": False},  # one process fewer per hub; test_idle_culler turns it on
    )
    settings.pop("oidc", None)
    settings.update(settings_overrides or {})
    (home / "workbench.yaml").write_text(yaml.safe_dump(settings))
    shutil.copy(config_source or ROOT / "hub_config" / "jupyterhub_config.py", home / "jupyterhub_config.py")
    for path in (home / "secrets", home):
        _own(path, 0o700)
    url = (
        settings.get("public_host", "").rstrip("/") + base_path if settings.get("public_host") else settings["bind_url"]
    )
    return Hub(
        name=name,
        url=url,
        home=home,
        admin_token=values["admin-api-token"],
        passwords=passwords,
        client_secret=values["oidc-client-secret"],
        admin_users=tuple(settings.get("admin_users", ())),
        hub_id=settings["hub_id"],
    )


def write_passwords(directory: Path, usernames) -> dict:
    directory.mkdir()
    passwords = {name: secrets.token_urlsafe(12) for name in usernames}
    for name, password in passwords.items():
        (directory / name).write_text(password + "\n")
        _own(directory / name, 0o400)
    _own(directory, 0o700)
    return passwords


def _as_hub_user(hub: Hub, command: list[str]) -> list[str]:
    return [
        "setpriv",
        f"--reuid={HUB_USER}",
        f"--regid={HUB_USER}",
        "--init-groups",
        "--",
        "env",
        "-i",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        f"HOME={hub.home}",
        "LANG=C.UTF-8",
        f"AIFA_WORKBENCH_SETTINGS={hub.home}/workbench.yaml",
        *command,
    ]


def _spawn(hub: Hub, command: list[str], log_name: str) -> subprocess.Popen:
    log = open(hub.home / log_name, "ab")
    return subprocess.Popen(
        _as_hub_user(hub, command),
        cwd=hub.home,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_proxy_process(hub: Hub) -> subprocess.Popen:
    hub.proxy_proc = _spawn(hub, [str(VENV / "bin" / "aifa-workbench"), "run-proxy"], "proxy.log")
    return hub.proxy_proc


def start_tunneld_process(hub: Hub) -> subprocess.Popen:
    """The tunnel daemon of this hub (forward-reach sites), as aifa-hubctl starts it."""
    hub.tunneld_proc = _spawn(hub, [str(VENV / "bin" / "aifa-workbench"), "tunneld"], "tunneld.log")
    return hub.tunneld_proc


def start_hub_process(hub: Hub) -> subprocess.Popen:
    hub.proc = _spawn(hub, [str(VENV / "bin" / "jupyterhub"), "-f", str(hub.home / "jupyterhub_config.py")], "hub.log")
    return hub.proc


def wait_until_up(hub: Hub, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"hub {hub.name} exited ({hub.proc.returncode}):\n{hub.log_tail()}")
        try:
            if requests.get(hub.url + "hub/api/", timeout=2, verify=False).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"hub {hub.name} did not answer within {timeout} s:\n{hub.log_tail()}")


def stop_servers(hub: Hub) -> list[str]:
    """Stop every server of the hub; returns the Slurm job ids they had."""
    try:
        users = hub.api("GET", "users", params={"include_stopped_servers": "0"}).json()
    except Exception:
        return []
    job_ids = []
    for user in users:
        for server in user.get("servers", {}).values():
            job_ids.append(server.get("state", {}).get("job_id"))
        if user.get("server") or user.get("pending"):
            hub.api("DELETE", f"users/{user['name']}/server")
    return [j for j in job_ids if j]


def _terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_hub(hub: Hub, timeout: float = 30) -> None:
    """Stop the hub and its proxy (users' jobs keep running: the hub does not cancel them)."""
    _terminate(hub.proc, timeout)
    _terminate(hub.proxy_proc, timeout)
    _terminate(hub.tunneld_proc, timeout)


def running_hub(
    name: str, base_path: str = "/", settings_overrides: dict | None = None, config_source: Path | None = None
) -> Hub:
    hub = write_hub_files(name, base_path, settings_overrides, config_source)
    start_proxy_process(hub)
    start_tunneld_process(hub)
    start_hub_process(hub)
    try:
        wait_until_up(hub)
    except Exception:
        stop_hub(hub)
        raise
    return hub


def login(hub: Hub, username: str, password: str | None = None) -> requests.Session:
    """Log in through the hub's login form, as a browser would; returns the cookie session."""
    import re

    session = requests.Session()
    page = session.get(hub.url + "hub/login", timeout=30)
    page.raise_for_status()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = session.post(
        hub.url + "hub/login",
        timeout=30,
        allow_redirects=False,
        data={
            "username": username,
            "_xsrf": xsrf,
            "password": hub.passwords[username] if password is None else password,
        },
    )
    if r.status_code != 302:
        raise AssertionError(f"login of {username} answered {r.status_code}")
    return session


def server_model(hub: Hub, username: str, server_name: str = "") -> dict:
    r = hub.api("GET", f"users/{username}")
    r.raise_for_status()
    return r.json()["servers"].get(server_name, {})


def wait_ready(hub: Hub, username: str, timeout: float = 120, server_name: str = "") -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = server_model(hub, username, server_name)
        if model.get("ready"):
            return model
        if not model:
            raise AssertionError(f"{username}'s server stopped while starting:\n{hub.log_tail()}")
        time.sleep(0.5)
    raise AssertionError(f"{username}'s server was not ready within {timeout} s:\n{hub.log_tail()}")


def progress_events(hub: Hub, username: str, token: str, timeout: float = 120, stop_on=None) -> list[dict]:
    """Read the spawn progress stream until it ends (ready or failed), or `stop_on(event)` is true."""
    import json

    events = []
    with requests.get(
        hub.url + f"hub/api/users/{username}/server/progress",
        stream=True,
        headers={"Authorization": f"token {token}"},
        timeout=timeout,
    ) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed") or (stop_on and stop_on(event)):
                    break
    return events
