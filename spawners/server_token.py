"""A server's API token lives exactly as long as its server.

JupyterHub creates the token at spawn, without an end, and deletes it at stop only if it still
holds it in memory: after a hub restart it has forgotten it (spawner.api_token is not part of
the spawner's state), so the job's end report is refused and the token stays valid forever.
The workbench keeps the token's database id (not the secret) in the spawner's state, lets the
token expire with the job's walltime, and revokes it when the server ends.
"""
from __future__ import annotations

from datetime import timedelta

from jupyterhub import orm

GRACE_SECONDS = 600   # past the walltime: Slurm's KillWait, the end report, clock skew


def token_id(db, token: str) -> int | None:
    """The database id of an API token, or None if the hub does not know it."""
    row = orm.APIToken.find(db, token) if token else None
    return row.id if row is not None else None


def limit_token(db, token: str, seconds: float) -> int | None:
    """Make `token` expire in `seconds` (+ grace); return its id."""
    row = orm.APIToken.find(db, token) if token else None
    if row is None:
        return None
    row.expires_at = row.now() + timedelta(seconds=seconds + GRACE_SECONDS)
    db.commit()
    return row.id


def revoke_token(db, token_row_id: int | None) -> bool:
    """Delete the token with this id; True if there was one."""
    if token_row_id is None:
        return False
    row = db.query(orm.APIToken).filter_by(id=token_row_id).first()
    if row is None:
        return False
    db.delete(row)
    db.commit()
    return True
