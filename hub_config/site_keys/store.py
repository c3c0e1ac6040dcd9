"""The SSH keys the hub holds for its users: one key pair per (hub user, site), made by the hub.

The user adds the public key to their account on the site (LUMI: their MyAccessID/Puhuri profile;
JUPITER: JuDoor, with the site's `from=` clause; Lucia: as Cenaero's documentation says). The
private key never leaves the hub: it is kept encrypted at rest with Fernet (AES-CBC and
HMAC-SHA256, the scheme of JupyterHub's auth_state crypto) under the `site-keys-secret` of the
hub's secrets, in <state_dir>/site-keys/<user>/<site>.key, mode 0600, owned by the hub's user.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aifa_workbench.model.files import write_atomically
from aifa_workbench.sites.ssh_library import asyncssh
from cryptography.fernet import Fernet, InvalidToken

_TOKEN = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def public_key_line(site, key: str, egress) -> str:
    """JUPITER (JuDoor) wants a from= clause naming where the logins come from: the hub's addresses."""
    if site.key_from_clause and egress:
        return f'from="{",".join(egress)}" {key}'
    return key


class SiteKeyError(RuntimeError):
    """A key cannot be read (wrong secret, damaged file); the message says which file."""


def fernet_from_secret(secret: str) -> Fernet:
    """Fernet wants 32 url-safe base64 bytes; the secret file holds any long random text."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.strip().encode()).digest()))


class SiteKeyStore:
    def __init__(self, directory: Path, secret: str):
        self.directory, self._fernet = Path(directory), fernet_from_secret(secret)

    def _path(self, user: str, site: str) -> Path:
        if not (_TOKEN.fullmatch(user) and _TOKEN.fullmatch(site)):
            raise ValueError(f"not a user or site name: {user[:40]!r} / {site[:40]!r}")
        return self.directory / user / f"{site}.key"

    def has_key(self, user: str, site: str) -> bool:
        return self._path(user, site).exists()

    def private_key(self, user: str, site: str) -> asyncssh.SSHKey:
        """The user's key for the site, made on first use."""
        path = self._path(user, site)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            return self._new_key(user, site, path)
        try:
            return asyncssh.import_private_key(self._fernet.decrypt(sealed))
        except (InvalidToken, asyncssh.KeyImportError) as e:
            raise SiteKeyError(
                f"{path}: cannot be read with the hub's site-keys-secret "
                f"({type(e).__name__}); make the key again for this user and site"
            ) from None

    def public_key(self, user: str, site: str) -> str:
        """The OpenSSH public key line the user gives to the site."""
        kind, data = self.private_key(user, site).export_public_key().decode().split()[:2]
        return f"{kind} {data} aifa-workbench:{user}@{site}"

    def replace(self, user: str, site: str) -> asyncssh.SSHKey:
        """A new key pair for (user, site), e.g. after the old one leaked; the site needs the new one."""
        self._path(user, site).unlink(missing_ok=True)
        return self.private_key(user, site)

    def _new_key(self, user: str, site: str, path: Path) -> asyncssh.SSHKey:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"aifa-workbench:{user}@{site}")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sealed = self._fernet.encrypt(key.export_private_key())
        try:  # never over a key another process made meanwhile
            write_atomically(path, sealed, fsync=True, replace=False)
        except FileExistsError:
            return self.private_key(user, site)
        return key
