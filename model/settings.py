"""The hub's own settings file (workbench.yaml), validated by one schema.

A bad file stops the hub with one sentence naming the file, the key and the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aifa_workbench.model.yaml_files import check_schema, load_yaml

# Demo logins (hub_config/login.py); kept here so that reading settings needs no JupyterHub.
PER_USER = "per-user-password"
SHARED_SINGLE_PERSON = "shared-password-single-person-demo"
OIDC = "oidc"  # federated login (hub_config/oidc.py): MyAccessID, or the demo's provider
LOGIN_MODES = (PER_USER, SHARED_SINGLE_PERSON, OIDC)


def read_passwords(directory: Path, usernames) -> dict[str, str]:
    """{user: password} from one file per user in `directory` (secrets_dir/passwords/<user>).
    Raises OSError (the caller names the file) or ValueError for an empty file."""
    passwords = {}
    for name in usernames:
        value = (directory / name).read_text().strip()
        if not value:
            raise ValueError(f"{directory / name} is empty")
        passwords[name] = value
    return passwords


_NAME = {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,31}$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_ABS_PATH = {"type": "string", "pattern": r"^/[^\n]*$"}
# A username on a site and a Slurm account there: plain tokens, nothing a shell or Slurm reads twice.
_SITE_USER = {"type": "string", "pattern": r"^[a-z_][a-z0-9_.-]{0,31}$"}
_ACCOUNT = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_URL = {"type": "string", "pattern": r"^https?://[^\s]+$", "maxLength": 500}
_GROUPS = {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,63}$"}}

# Federated login (login: oidc). The client secret is secrets_dir/oidc-client-secret; auth_state
# (the tokens) is encrypted with secrets_dir/auth-state-key.
OIDC_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["authorize_url", "token_url", "userdata_url", "client_id", "entitlement_prefix", "allowed_groups"],
    "properties": {
        "authorize_url": _URL,
        "token_url": _URL,
        "userdata_url": _URL,
        "end_session_url": _URL,
        "client_id": {"type": "string", "pattern": r"^[\x21-\x7e]{1,200}$"},
        "login_service": {"type": "string", "minLength": 1, "maxLength": 60, "pattern": r"^[^\n<>]+$"},
        "scopes": {
            "type": "array",
            "uniqueItems": True,
            "contains": {"const": "openid"},
            "items": {"type": "string", "pattern": r"^[a-z_]{1,64}$"},
        },
        # the form every identifier has, e.g. ^[0-9a-f]{1,64}@myaccessid\.org$; and identifiers never let in
        "sub_pattern": {"type": "string", "minLength": 1, "maxLength": 200},
        "refused_subs": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        # entitlement URNs under this prefix name the hub groups: <prefix><group>[:role=<role>]#<authority>
        "entitlement_prefix": {"type": "string", "pattern": r"^urn:[^\s#]+:$", "maxLength": 200},
        "allowed_groups": {**_GROUPS, "minItems": 1},
        "admin_groups": _GROUPS,
        "refresh_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
        # MyAccessID's identifiers compare without regard to case; others' do not
        "fold_case": {"type": "boolean"},
        # whose entitlements count (the part after '#'); none: any
        "entitlement_authorities": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.-]{0,99}$"},
        },
        "prompt": {"enum": ["consent", "login consent"]},
        # site accounts the provider lists (JSC: hpc_infos_attribute, "<username>,<system>,<project>,…"):
        # the claim and {system as the claim names it, lower case: catalogue site}
        "site_accounts_claim": {"type": "string", "pattern": r"^[a-z_]{1,64}$"},
        "site_systems": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z0-9-]{1,32}$"},
            "additionalProperties": _NAME,
        },
        # the hub name of an identity the admins named ({sub: name}); others are u-<16 hex>
        "people": {"type": "object", "propertyNames": {"maxLength": 255}, "additionalProperties": _NAME},
    },
}
IDLE_CULLER_DEFAULTS = {
    "enabled": True,
    "timeout_seconds": 3600,
    "every_seconds": 300,
    "max_age_seconds": 0,
    "activity_interval_seconds": 300,
}
COURSES_DEFAULTS = {
    "enabled": True,
    "cluster": "aifa-local",
    "helper": "/usr/local/sbin/aifa-course-helper",
    "guest_prefix": "aifa-guest",
    "guest_count": 0,
    "trainer_groups": ["trainers"],
    "trainers": [],
    "every_seconds": 30,
    "last_start_minutes": 15,
}
OIDC_DEFAULTS = {
    "scopes": ["openid", "email", "profile", "eduperson_entitlement", "offline_access"],
    "sub_pattern": ".+",
    "refused_subs": ["test@myaccessid.org"],
    "admin_groups": [],
    "refresh_seconds": 300,
    "people": {},
    "login_service": "MyAccessID",
    "fold_case": False,
    "entitlement_authorities": [],
    "prompt": "consent",
    "site_accounts_claim": "hpc_infos_attribute",
    "site_systems": {},
}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "bind_url",
        "hub_port",
        "proxy_api_port",
        "state_dir",
        "secrets_dir",
        "venv_dir",
        "demo_users",
        "sites",
        "default_site",
    ],
    "properties": {
        "bind_url": {"type": "string", "pattern": r"^https?://[^\s]+/$"},
        "login": {"enum": list(LOGIN_MODES)},
        "oidc": OIDC_SCHEMA,
        # Idle servers are stopped (their GPUs freed; files kept): jupyterhub-idle-culler as a service.
        "idle_culler": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "timeout_seconds": {"type": "integer", "minimum": 10, "maximum": 7 * 86400},
                "every_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
                "max_age_seconds": {"type": "integer", "minimum": 0, "maximum": 30 * 86400},
                "activity_interval_seconds": {"type": "integer", "minimum": 2, "maximum": 3600},
            },
        },
        # Courses on the local cluster: who makes them, the guest accounts participants without an
        # account of their own are lent, the root helper for reservations (model.course)
        "courses": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "cluster": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,39}$"},
                "helper": _ABS_PATH,
                "guest_prefix": {"type": "string", "pattern": r"^[a-z][a-z0-9-]{1,20}$"},
                "guest_count": {"type": "integer", "minimum": 0, "maximum": 999},
                "trainer_groups": {"type": "array", "items": _NAME},
                "trainers": {"type": "array", "items": _NAME},
                "every_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                # no new session of a course this close to its end
                "last_start_minutes": {"type": "integer", "minimum": 0, "maximum": 120},
            },
        },
        "public_host": {"type": "string", "pattern": r"^https?://[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$"},
        "user_domain": {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"},
        "tls_cert_file": _ABS_PATH,
        "max_request_bytes": {"type": "integer", "minimum": 4096, "maximum": 104857600},
        # whom users ask, on every page's header: plain text (a name, an address, a phone number)
        "support_contact": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\n<>]+$"},
        "hub_id": {"type": "string", "pattern": r"^[a-z0-9]{1,12}$"},
        "tls_key_file": _ABS_PATH,
        "hub_port": _PORT,
        # where the hub's API listens: the loopback, or all addresses when jobs of a remote site
        # call it directly (the site catalogue's reach.hub_url)
        "hub_bind_address": {"enum": ["127.0.0.1", "0.0.0.0"]},
        # the addresses the hub's SSH logins come from, for sites that want a from= clause (JUPITER)
        "hub_egress_addresses": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "pattern": r"^[0-9a-f.:]+(/[0-9]{1,3})?$"},
        },
        "proxy_api_port": _PORT,
        "state_dir": _ABS_PATH,
        "secrets_dir": _ABS_PATH,
        "venv_dir": _ABS_PATH,
        "slurm_bin": _ABS_PATH,
        "demo_users": {"type": "array", "items": _NAME, "minItems": 1, "uniqueItems": True},
        "admin_users": {"type": "array", "items": _NAME, "uniqueItems": True},
        "sites": {"type": "array", "items": _NAME, "minItems": 1, "uniqueItems": True},
        "default_site": _NAME,
        "catalogue_dir": _ABS_PATH,
        "start_timeout": {"type": "integer", "minimum": 10, "maximum": 86400},
        "named_servers_per_user": {"type": "integer", "minimum": 0, "maximum": 100},
        "walltime_warnings_minutes": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "integer", "minimum": 1, "maximum": 1440},
        },
        # The tunnel gateway beside the hub (ansible role tunnel_gateway), for reverse-mode sites.
        "tunnel_gateway": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "port": _PORT,
                "user": _NAME,
                "host_key_file": _ABS_PATH,
                "grants_dir": _ABS_PATH,
                "ports": {"type": "array", "minItems": 2, "maxItems": 2, "items": _PORT},
            },
        },
        # The site account that owns each remote site's job runtime: {site: username}.
        "runtime_owners": {
            "type": "object",
            "propertyNames": {"pattern": _NAME["pattern"]},
            "additionalProperties": _SITE_USER,
        },
        # Who each hub user is on each site: {hub user: {site: {username, accounts}}}.
        "site_users": {
            "type": "object",
            "propertyNames": {"pattern": _NAME["pattern"]},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"pattern": _NAME["pattern"]},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["username"],
                    "properties": {
                        "username": _SITE_USER,
                        "accounts": {"type": "array", "uniqueItems": True, "items": _ACCOUNT},
                    },
                },
            },
        },
    },
}


class SettingsError(ValueError):
    """The settings file cannot be used; the message names file, key and reason."""


@dataclass(frozen=True)
class TunnelGateway:
    """The tunnel gateway's facts the hub needs; the defaults are the tunnel_gateway role's."""

    port: int = 2222
    user: str = "aifa-tunnel"
    ports: tuple[int, int] = (42000, 42999)  # the ports granted, one per server
    host_key_file: str = "/etc/aifa-workbench/gateway/ssh_host_ed25519_key.pub"
    grants_dir: str = "/var/lib/aifa-tunnel-grants"


@dataclass(frozen=True)
class Settings:
    path: Path
    bind_url: str
    hub_port: int
    proxy_api_port: int
    state_dir: Path
    secrets_dir: Path
    venv_dir: str
    demo_users: tuple[str, ...]
    admin_users: tuple[str, ...]
    sites: tuple[str, ...]
    default_site: str
    catalogue_dir: str | None = None
    site_users: dict | None = None
    runtime_owners: dict = field(default_factory=dict)
    slurm_bin: str = "/usr/bin"
    start_timeout: int = 300
    named_servers_per_user: int = 0
    walltime_warnings_minutes: tuple[int, ...] = (10, 2)
    login: str = PER_USER
    oidc: dict | None = None
    idle_culler: dict = field(default_factory=lambda: dict(IDLE_CULLER_DEFAULTS))
    courses: dict = field(default_factory=lambda: dict(COURSES_DEFAULTS))
    public_host: str = ""
    user_domain: str = ""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_request_bytes: int = 65536
    support_contact: str = "your trainer, or the BE-AIFA support desk"
    hub_id: str = "hub"
    hub_bind_address: str = "127.0.0.1"
    hub_egress_addresses: tuple[str, ...] = ()
    tunnel_gateway: TunnelGateway = field(default_factory=TunnelGateway)

    @property
    def https(self) -> bool:
        return self.bind_url.startswith("https://")

    def check_tls_files(self) -> None:
        """An https hub needs its certificate and key readable (by the hub's user, who runs the proxy)."""
        for key in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, key)
            if path:
                try:
                    Path(path).open("rb").close()
                except OSError as e:
                    raise SettingsError(f"{self.path}: {key}: cannot read {path} ({e.strerror}).") from None

    def check_tunnel_gateway(self, reverse_sites) -> None:
        """Sites in reverse reach need the tunnel gateway: the CA that certifies each job, the
        gateway's host key the jobs pin, and the grants directory the hub writes."""
        if not reverse_sites:
            return
        gw, why = self.tunnel_gateway, ""
        for key, path, mode in (
            ("tunnel_gateway.host_key_file", gw.host_key_file, os.R_OK),
            ("secrets_dir", str(self.secrets_dir / "tunnel-ca"), os.R_OK),
            ("tunnel_gateway.grants_dir", gw.grants_dir, os.W_OK | os.X_OK),
        ):
            if not os.access(path, mode):
                why = f"{key}: {path} is not {'writable' if mode != os.R_OK else 'readable'} by the hub"
                break
        if why:
            raise SettingsError(
                f"{self.path}: {why}, and {', '.join(reverse_sites)} reach the hub through "
                "its tunnel gateway (ansible role tunnel_gateway sets it up)."
            )

    def passwords(self) -> dict[str, str]:
        """Each demo user's own password, from secrets_dir/passwords/<user>."""
        try:
            return read_passwords(self.secrets_dir / "passwords", self.demo_users)
        except OSError as e:
            raise SettingsError(
                f"{self.path}: secrets_dir: cannot read {e.filename} ({e.strerror}); "
                "each demo user needs a password file there (make install writes them)."
            ) from None
        except ValueError as e:
            raise SettingsError(f"{self.path}: secrets_dir: {e}.") from None

    def auth_state_key(self) -> str:
        """The key that encrypts users' tokens in the hub's database: 64 hex digits."""
        key = self.secret("auth-state-key")
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise SettingsError(
                f"{self.path}: secrets_dir: {self.secrets_dir / 'auth-state-key'} must hold "
                "64 hex digits (32 bytes), as `openssl rand -hex 32` writes."
            )
        return key

    def secret(self, name: str) -> str:
        path = self.secrets_dir / name
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise SettingsError(f"{self.path}: secrets_dir: cannot read {path} ({e.strerror}).") from None
        if not value:
            raise SettingsError(f"{self.path}: secrets_dir: {path} is empty.")
        return value


def validate(data, path: Path) -> None:
    check_schema(data, SCHEMA, path, SettingsError)
    if data["default_site"] not in data["sites"]:
        raise SettingsError(
            f"{path}: default_site: {data['default_site']!r} is not one of the "
            f"enabled sites ({', '.join(data['sites'])})."
        )
    _validate_origins(data, path)
    ports = data.get("tunnel_gateway", {}).get("ports")
    if ports and ports[0] > ports[1]:
        raise SettingsError(f"{path}: tunnel_gateway.ports: the first port must not be above the last.")
    _validate_oidc(data, path)
    culler = {**IDLE_CULLER_DEFAULTS, **data.get("idle_culler", {})}
    if culler["enabled"] and culler["timeout_seconds"] < 3 * culler["activity_interval_seconds"]:
        raise SettingsError(
            f"{path}: idle_culler.timeout_seconds: {culler['timeout_seconds']} s is not well above "
            f"the activity interval ({culler['activity_interval_seconds']} s; at least three times "
            "it), so servers in use could be stopped as idle."
        )
    unknown_admins = set(data.get("admin_users", [])) - set(data["demo_users"])
    if unknown_admins:
        raise SettingsError(
            f"{path}: admin_users: {', '.join(sorted(unknown_admins))} must also be listed in demo_users."
        )


def _validate_oidc(data, path: Path) -> None:
    oidc = data.get("oidc")
    if data.get("login") == OIDC and not oidc:
        raise SettingsError(
            f"{path}: oidc: login: oidc needs an oidc section (the provider's URLs, client_id, "
            "entitlement_prefix, allowed_groups)."
        )
    if not oidc:
        return
    try:
        re.compile(oidc.get("sub_pattern", ".+"))
    except re.error as e:
        raise SettingsError(f"{path}: oidc.sub_pattern: not a regular expression ({e}).") from None
    for key in ("allowed_groups", "admin_groups"):
        reserved = [g for g in oidc.get(key, []) if str(g).startswith("course-")]
        if reserved:
            raise SettingsError(
                f"{path}: oidc.{key}: {reserved[0]} starts with course-, which names the hub's own "
                "course groups (a provider's groups of that name are dropped); rename it."
            )
    names = list(oidc.get("people", {}).values())
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SettingsError(f"{path}: oidc.people: {', '.join(twice)} is given to more than one identity.")
    if oidc.get("fold_case"):
        lower = [sub.strip().lower() for sub in oidc.get("people", {})]
        if len(set(lower)) != len(lower):
            raise SettingsError(
                f"{path}: oidc.people: an identity is listed twice (with fold_case, identifiers "
                "are compared without regard to case)."
            )


def default_public_host(bind_url: str) -> str:
    """The hub's origin when the settings name none: bind_url's, with a loopback address
    spelled `localhost` (user servers then live on <user>.localhost, which browsers resolve
    to the loopback)."""
    parts = urlsplit(bind_url)
    host = "localhost" if parts.hostname in ("127.0.0.1", "::1", "localhost") else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def default_hub_id(public_host: str, state_dir: str) -> str:
    """The id in this hub's job names when the settings name none: stable for one hub (its
    address and state), different for two hubs on one cluster."""
    return hashlib.sha256(f"{public_host}|{state_dir}".encode()).hexdigest()[:8]


def _validate_origins(data, path: Path) -> None:
    public_host = data.get("public_host") or default_public_host(data["bind_url"])
    host = urlsplit(public_host).hostname or ""
    if re.fullmatch(r"[0-9.]+|\[.*\]", host):
        raise SettingsError(
            f"{path}: public_host: {public_host!r} is an IP address; each user's server needs "
            "a host name of its own (<user>.<user_domain>), so name the hub by a host name."
        )
    if urlsplit(public_host).scheme != urlsplit(data["bind_url"]).scheme:
        raise SettingsError(f"{path}: public_host: {public_host!r} and bind_url must both be http or both https.")
    if data["bind_url"].startswith("https://") and not (data.get("tls_cert_file") and data.get("tls_key_file")):
        raise SettingsError(
            f"{path}: tls_cert_file: an https bind_url needs tls_cert_file and tls_key_file "
            "(a certificate for the hub's host and for *.<user_domain>)."
        )


def load_settings(path) -> Settings:
    path = Path(path)
    data = load_yaml(path, SettingsError, "the settings file")
    validate(data, path)
    public_host = data.get("public_host") or default_public_host(data["bind_url"])
    return Settings(
        path=path,
        bind_url=data["bind_url"],
        hub_port=data["hub_port"],
        proxy_api_port=data["proxy_api_port"],
        state_dir=Path(data["state_dir"]),
        secrets_dir=Path(data["secrets_dir"]),
        venv_dir=data["venv_dir"],
        demo_users=tuple(data["demo_users"]),
        admin_users=tuple(data.get("admin_users", [])),
        sites=tuple(data["sites"]),
        default_site=data["default_site"],
        catalogue_dir=data.get("catalogue_dir"),
        site_users=data.get("site_users", {}),
        runtime_owners=data.get("runtime_owners", {}),
        hub_bind_address=data.get("hub_bind_address", "127.0.0.1"),
        hub_egress_addresses=tuple(data.get("hub_egress_addresses", ())),
        slurm_bin=data.get("slurm_bin", "/usr/bin"),
        start_timeout=data.get("start_timeout", 300),
        named_servers_per_user=data.get("named_servers_per_user", 0),
        walltime_warnings_minutes=tuple(data.get("walltime_warnings_minutes", (10, 2))),
        login=data.get("login", PER_USER),
        oidc={**OIDC_DEFAULTS, **data["oidc"]} if "oidc" in data else None,
        idle_culler={**IDLE_CULLER_DEFAULTS, **data.get("idle_culler", {})},
        courses={**COURSES_DEFAULTS, **data.get("courses", {})},
        public_host=public_host,
        user_domain=data.get("user_domain") or urlsplit(public_host).hostname,
        tls_cert_file=data.get("tls_cert_file"),
        tls_key_file=data.get("tls_key_file"),
        max_request_bytes=data.get("max_request_bytes", 65536),
        support_contact=data.get("support_contact", Settings.support_contact),
        hub_id=data.get("hub_id") or default_hub_id(public_host, data["state_dir"]),
        tunnel_gateway=TunnelGateway(
            **{k: tuple(v) if k == "ports" else v for k, v in data.get("tunnel_gateway", {}).items()}
        ),
    )
