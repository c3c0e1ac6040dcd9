"""Who each person is on each remote site: their username there and the projects (Slurm accounts)
they may charge. Three sources, the first that names a site wins:

1. what the hub's admins set on /hub/site-accounts or through the REST API;
2. what the identity provider says at each login and refresh, where it says it (JSC's
   `hpc_infos_attribute`: "<username>,<system>[_<partition>],<project>,…");
3. the settings' `site_users`.
The first two are kept in the hub's state (`site-accounts.json`, 0600), which the tunnel daemon
reads too (it logs in to forward-reach sites as the user); a reader sees the file's changes.
Beside them, what the sites said of each account at its last start there (`read`: its home, as
its login shell's $HOME, and per project the project's folders it has there), kept for that site
username only.

The spawner, the keys page and the SSH logins all read this one registry (through
sites.registry.Identities, whose `site_users` it is)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from aifa_workbench.model.files import write_atomically

SITE_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ACCOUNTS = 50


class SiteAccountError(ValueError):
    """A site account the registry cannot hold; the message names the field in the page's words."""


def checked_entry(site: str, sites, username, accounts) -> dict:
    """{username, accounts} after checking each value, or SiteAccountError with a sentence."""
    if site not in sites:
        raise SiteAccountError(f"Site must be one of: {', '.join(sorted(sites)) or 'none'}.")
    if not isinstance(username, str) or not SITE_USER.match(username):
        raise SiteAccountError(
            "Username must be a site username: lower-case letters, digits, '_', '.' or '-', "
            "at most 32 characters, starting with a letter or '_'."
        )
    if isinstance(accounts, str):
        accounts = [a.strip() for a in accounts.replace(",", " ").split()]
    if (
        not isinstance(accounts, list)
        or len(accounts) > MAX_ACCOUNTS
        or not all(isinstance(a, str) and ACCOUNT.match(a) for a in accounts)
    ):
        raise SiteAccountError(
            f"Projects must be Slurm account names (letters, digits, '_', '.', '-'), "
            f"at most {MAX_ACCOUNTS}, separated by commas or spaces."
        )
    return {"username": username, "accounts": list(dict.fromkeys(accounts))}


def change_refused(
    user: str, site_title: str, job_id: str | None, current: dict | None, new: dict | None
) -> str | None:
    """The sentence refusing to change who `user` is on a site while a job of theirs runs there
    (the hub watches and stops that job as its site user), or None."""
    if not job_id or (current or {}).get("username") == (new or {}).get("username"):
        return None
    return (
        f"{user} has a session running on {site_title} (job {job_id}) as "
        f"{(current or {}).get('username') or 'their current account'}; stop it first, then change the account."
    )


def accounts_from_claims(values, systems: Mapping[str, str]) -> dict[str, dict]:
    """JSC's `hpc_infos_attribute` -> {site: {username, accounts}} for the systems named in
    `systems` ({claim's system name, lower case: catalogue site}); anything malformed is skipped."""
    found: dict[str, dict] = {}
    if not isinstance(values, list):
        return found
    for value in values[:500]:
        if not isinstance(value, str):
            continue
        fields = value.split(",")
        if len(fields) < 3:
            continue
        username, system, project = fields[0].strip(), fields[1].strip().lower(), fields[2].strip()
        site = systems.get(system.split("_", 1)[0])
        if not site or not SITE_USER.match(username) or not ACCOUNT.match(project):
            continue
        entry = found.setdefault(site, {"username": username, "accounts": []})
        if entry["username"] == username and project not in entry["accounts"]:
            entry["accounts"].append(project)
    return found


def _read_layer(data) -> dict:
    """{user: {site: {username, home[, storage]}}} as read back, or TypeError."""
    if not isinstance(data, dict) or not all(
        isinstance(sites, dict)
        and all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("username", "home")) for e in sites.values()
        )
        for sites in data.values()
    ):
        raise TypeError("read: not {user: {site: {username, home}}}")
    for sites in data.values():
        for entry in sites.values():
            storage = entry.get("storage", {})
            if not isinstance(storage, dict) or not all(
                isinstance(dirs, dict) and all(isinstance(v, str) for v in dirs.values()) for dirs in storage.values()
            ):
                raise TypeError("read: a storage is not {account: {kind: directory}}")
    return data


def _layer(data) -> dict:
    """{user: {site: {username, accounts}}} as read back, or TypeError."""
    if not isinstance(data, dict) or not all(
        isinstance(sites, dict)
        and all(
            isinstance(e, dict) and isinstance(e.get("username"), str) and isinstance(e.get("accounts", []), list)
            for e in sites.values()
        )
        for sites in data.values()
    ):
        raise TypeError("not {user: {site: {username, accounts}}}")
    return data


class SiteAccounts(Mapping):
    """{hub user: {site: {"username", "accounts"}}}, merged from the three sources."""

    def __init__(self, settings_users: Mapping, path: Path | None):
        self.settings_users = dict(settings_users or {})
        self.path = path
        self.kept: dict[str, dict] = {}
        self.claimed: dict[str, dict] = {}
        self.read: dict[str, dict] = {}
        self._seen = None
        self._refresh()

    def _refresh(self) -> None:
        """Read the file again if it changed (another process of the hub's user wrote it)."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            data = json.loads(self.path.read_text())
            kept, claimed = _layer(data["kept"]), _layer(data["claimed"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            # keep the last good copy: a bad file must not stop logins, spawns or the hub's start
            logging.getLogger("JupyterHub").error(
                "%s: not read, keeping the site accounts known so far (%s)", self.path, e
            )
            return
        self.kept, self.claimed = kept, claimed
        try:  # what sites said is read again at the next start: a bad layer costs only that
            self.read = _read_layer(data.get("read", {}))  # an earlier release's file has none
        except TypeError:
            self.read = {}

    def _write(self) -> None:
        if self.path is None:
            return
        state = {"kept": self.kept, "claimed": self.claimed, "read": self.read}
        write_atomically(self.path, json.dumps(state, indent=1, sort_keys=True), fsync=True)
        stat = self.path.stat()
        self._seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)

    # --- Mapping: what the spawner and the SSH logins read -------------------------------------
    def __getitem__(self, user: str) -> dict:
        self._refresh()
        merged = {**self.settings_users.get(user, {}), **self.claimed.get(user, {}), **self.kept.get(user, {})}
        if not merged:
            raise KeyError(user)
        return merged

    def __iter__(self):
        self._refresh()
        return iter(sorted(set(self.settings_users) | set(self.claimed) | set(self.kept)))

    def __len__(self) -> int:
        return len(set(self.settings_users) | set(self.claimed) | set(self.kept))

    def source(self, user: str, site: str) -> str:
        for name, layer in (
            ("admins", self.kept),
            ("identity provider", self.claimed),
            ("settings", self.settings_users),
        ):
            if site in layer.get(user, {}):
                return name
        return ""

    def fallback(self, user: str, site: str) -> dict | None:
        """What the user would be on the site without the admins' entry."""
        self._refresh()
        return self.claimed.get(user, {}).get(site) or self.settings_users.get(user, {}).get(site)

    # --- changes -------------------------------------------------------------------------------
    def set_kept(self, user: str, site: str, entry: dict) -> None:
        self._refresh()
        self.kept.setdefault(user, {})[site] = entry
        self._write()

    def remove_kept(self, user: str, site: str) -> bool:
        self._refresh()
        removed = self.kept.get(user, {}).pop(site, None) is not None
        if not self.kept.get(user, True):
            self.kept.pop(user)
        if removed:
            self._write()
        return removed

    def set_claimed(self, user: str, entries: dict[str, dict]) -> None:
        """What the provider said at this login or refresh (written only when it changed)."""
        self._refresh()
        if (self.claimed.get(user) or {}) == (entries or {}):
            return
        if entries:
            self.claimed[user] = entries
        else:
            self.claimed.pop(user, None)
        self._write()

    # --- what the sites said -----------------------------------------------------------------------
    def home(self, user: str, site: str, username: str | None) -> str | None:
        """The home `site` gave `username` (the user's account there) at its last start, if any."""
        self._refresh()
        entry = self.read.get(user, {}).get(site)
        return entry["home"] if entry and username and entry["username"] == username else None

    def storage(self, user: str, site: str, username: str | None, account: str) -> dict:
        """The project's directories `site` had for `username` in `account` at its last start there
        ({kind: dir}), {} if none is known."""
        self._refresh()
        entry = self.read.get(user, {}).get(site)
        if not entry or not username or entry["username"] != username:
            return {}
        return dict((entry.get("storage") or {}).get(account) or {})

    def remember_home(self, user: str, site: str, username: str, home: str, storage: dict | None = None) -> None:
        self._refresh()
        old = self.read.get(user, {}).get(site) or {}
        kept = dict(old.get("storage") or {}) if old.get("username") == username else {}
        entry = {"username": username, "home": home}
        if kept or storage:
            entry["storage"] = {**kept, **(storage or {})}
        if self.read.get(user, {}).get(site) != entry:
            self.read.setdefault(user, {})[site] = entry
            self._write()


def registry_of(settings) -> SiteAccounts:
    """The hub's registry: the settings' site_users and the file in its state directory."""
    return SiteAccounts(settings.site_users or {}, Path(settings.state_dir) / "site-accounts.json")
