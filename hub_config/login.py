"""The login without an identity provider (the demo's, `login: per-user-password`): each user has a password of their own.

JupyterHub's SharedPasswordAuthenticator lets anyone who knows the one password log in as any
allowed user, and so run code as that unix user: fine for one person trying the demo alone,
wrong as soon as two people share it. The workbench uses it only when the settings say
`login: shared-password-single-person-demo`.
"""

from __future__ import annotations

import hmac

from jupyterhub.auth import Authenticator
from traitlets import Dict, Unicode

from aifa_workbench.model.settings import SHARED_SINGLE_PERSON, read_passwords  # noqa: F401  (where the hub's config and tests read them)


def password_matches(expected: str | None, given) -> bool:
    """Constant-time comparison; a user without a password never matches."""
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


class PerUserPasswordAuthenticator(Authenticator):
    """Log in with the password of that user, and no other."""

    passwords = Dict(
        value_trait=Unicode(),
        help="Each user's own password: {username: password} (from secrets_dir/passwords/<user>).",
    ).tag(config=True)

    async def authenticate(self, handler, data):
        username = self.normalize_username(str(data.get("username", "")))
        if password_matches(self.passwords.get(username), data.get("password")):
            return username
        return None
