"""The suite's own OpenID Connect provider: the demo's (ansible role oidc_provider, npm's
oidc-provider with its own login and consent forms), one process per test module, with people
shaped like MyAccessID's (opaque sub, email, entitlement URNs)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urljoin

import requests

from .hubs import _HANDED_OUT

OP_DIR = Path("/opt/aifa-workbench/oidc-provider")
OP_USER = "aifa-oidc"
PROVIDERS_DIR = Path("/var/lib/aifa-oidc/test-providers")  # the provider's user reaches no hub's state
AUTHORITY = "aifa-test.example"
PREFIX = "urn:geant:aifa-test.example:group:aifa:"


def entitlement(group: str) -> str:
    return f"{PREFIX}{group}#{AUTHORITY}"


@dataclass
class Person:
    login: str
    sub: str
    email: str
    groups: list[str]
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    hpc_infos: list[str] | None = None  # JSC's site accounts claim


def person(login: str, groups: list[str], email: str | None = None) -> Person:
    return Person(login, secrets.token_hex(16) + "@" + AUTHORITY, email or f"{login}@{AUTHORITY}", groups)


def scrypt(password: str) -> str:
    salt = secrets.token_bytes(16)
    return salt.hex() + ":" + hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=64).hex()


@dataclass
class Provider:
    url: str
    home: Path
    people: dict[str, Person]
    config_path: Path
    config: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def write_users(self) -> None:
        users = [
            {
                "login": p.login,
                "sub": p.sub,
                "email": p.email,
                "name": p.login.capitalize(),
                "entitlements": [entitlement(g) for g in p.groups],
                "password_scrypt": scrypt(p.password),
                **({"hpc_infos": p.hpc_infos} if p.hpc_infos else {}),
            }
            for p in self.people.values()
        ]
        path = self.home / "users.json"
        (self.home / "users.json.new").write_text(json.dumps({"users": users}))
        _readable_by_provider(self.home / "users.json.new")
        os.replace(self.home / "users.json.new", path)

    def set_groups(self, login: str, groups: list[str]) -> None:
        self.people[login].groups = groups
        self.write_users()

    def start(self) -> None:
        log = open(self.home / "provider.log", "ab")
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={OP_USER}",
                f"--regid={OP_USER}",
                "--init-groups",
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
                "--bounding-set=-all,+net_bind_service",
                "--",
                "env",
                "-i",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                shutil.which("node"),
                str(OP_DIR / "provider.mjs"),
                str(self.config_path),
            ],
            cwd="/",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/.well-known/openid-configuration", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the OIDC provider did not answer:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> None:
        """Its keys, sessions, grants and refresh tokens are kept in its state directory."""
        self.stop()
        self.start()

    def forget(self) -> None:
        """Restarted with nothing kept: every grant and refresh token it made is gone."""
        self.stop()
        shutil.rmtree(self.home / "state")
        self.make_state_dir()
        self.start()

    def make_state_dir(self) -> None:
        state = self.home / "state"
        state.mkdir(mode=0o700)
        os.chown(state, pwd.getpwnam(OP_USER).pw_uid, pwd.getpwnam(OP_USER).pw_gid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.home / "provider.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_privileged_port() -> int:
    """A port below 1024, as the demo's provider has: no job on this host can take its place."""
    import random
    import socket

    for port in random.sample(range(900, 1000), 100):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port in 900-999 for a test provider")


def _readable_by_provider(path: Path) -> None:
    os.chown(path, 0, pwd.getpwnam(OP_USER).pw_gid)
    path.chmod(0o750 if path.is_dir() else 0o640)


def make_provider(people: list[Person], access_token_seconds: int = 3600, clock_tolerance: int = 15) -> Provider:
    """A provider, not started yet: its client (the hub) is added by `add_client`."""
    home = PROVIDERS_DIR / f"oidc-{secrets.token_hex(3)}"
    home.mkdir(parents=True)
    _readable_by_provider(PROVIDERS_DIR)
    _readable_by_provider(home)
    port = free_privileged_port()
    url = f"http://127.0.0.1:{port}"
    provider = Provider(url=url, home=home, people={p.login: p for p in people}, config_path=home / "config.json")
    provider.write_users()
    provider.make_state_dir()
    provider.config = {
        "issuer": url,
        "listen_host": "127.0.0.1",
        "port": port,
        "users_file": str(home / "users.json"),
        "access_token_seconds": access_token_seconds,
        "clock_tolerance_seconds": clock_tolerance,
        "state_dir": str(home / "state"),
        "clients": [],
    }
    return provider


def add_client(provider: Provider, hub_url: str, client_secret: str, client_id: str = "aifa-workbench") -> None:
    secret_file = provider.home / f"{client_id}.secret"
    secret_file.write_text(client_secret + "\n")
    _readable_by_provider(secret_file)
    provider.config["clients"].append(
        {
            "client_id": client_id,
            "client_secret_file": str(secret_file),
            "redirect_uris": [hub_url + "hub/oauth_callback"],
        }
    )
    provider.config_path.write_text(json.dumps(provider.config))
    _readable_by_provider(provider.config_path)


def hub_settings(provider: Provider, people: dict[str, str], **extra) -> dict:
    """The settings' oidc section for a test hub of this provider; `people`: {login: hub name}."""
    return {
        "login": "oidc",
        "oidc": {
            "authorize_url": provider.url + "/auth",
            "token_url": provider.url + "/token",
            "userdata_url": provider.url + "/me",
            "client_id": "aifa-workbench",
            "login_service": "the test identity provider",
            "entitlement_prefix": PREFIX,
            "allowed_groups": ["workbench"],
            "admin_groups": ["admins"],
            "sub_pattern": r"^[0-9a-f]{32}@" + re.escape(AUTHORITY) + "$",
            "people": {provider.people[login].sub: name for login, name in people.items()},
            **extra,
        },
    }


def start_oidc_hub(
    name: str, provider: Provider, people: dict[str, str], settings_overrides: dict | None = None, **oidc_extra
):
    """A test hub logging in through `provider` (started too); `people`: {login: hub name}.
    Returns the hub; stop it with hubs.stop_hub and the provider with provider.stop()."""
    from . import hubs

    hub = hubs.write_hub_files(name, "/", dict(settings_overrides or {}))
    add_client(provider, hub.url, hub.client_secret)
    settings = hubs.yaml.safe_load((hub.home / "workbench.yaml").read_text())
    settings.update(hub_settings(provider, people, **oidc_extra))
    (hub.home / "workbench.yaml").write_text(hubs.yaml.safe_dump(settings))
    provider.start()
    hubs.start_proxy_process(hub)
    hubs.start_tunneld_process(hub)
    hubs.start_hub_process(hub)
    try:
        hubs.wait_until_up(hub)
    except Exception:
        hubs.stop_hub(hub)
        provider.stop()
        raise
    return hub


FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def login_through(
    hub_url: str,
    provider: Provider,
    login: str,
    password: str | None = None,
    session: requests.Session | None = None,
    next_path: str = "",
) -> requests.Response:
    """Click through as a person does: the hub's login button, the provider's sign-in form, its
    consent form; returns the last answer (the hub's page, or its refusal). The session keeps cookies.
    `next_path`: the hub page the login was asked for (a course's invite link)."""
    session = session if session is not None else requests.Session()
    page = session.get(hub_url + "hub/oauth_login?next=" + quote(next_path), timeout=30)
    person_ = provider.people[login]
    for _ in range(3):
        action = FORM_ACTION.search(page.text) if page.url.startswith(provider.url) else None
        if not action:
            break
        form = (
            {"login": login, "password": person_.password if password is None else password}
            if action.group(1).endswith("/login")
            else {}
        )
        page = session.post(urljoin(page.url, action.group(1)), data=form, timeout=30)
    share_session_cookie(session)
    return page


def share_session_cookie(session: requests.Session) -> None:
    """The hub sets its session cookie for .localhost (every user's subdomain); browsers send it
    to localhost too, Python's cookie jar does not: without it each form post would get a new
    session and fail its XSRF check."""
    for cookie in list(session.cookies):
        if cookie.name == "jupyterhub-session-id" and cookie.domain == ".localhost":
            session.cookies.set(cookie.name, cookie.value, domain="localhost.local", path=cookie.path)
