"""A server's API token lives exactly as long as its server.

JupyterHub creates the token at spawn, without an end, and deletes it at stop only if it still
holds it in memory: after a hub restart it has forgotten it (spawner.api_token is not part of
the spawner's state), so the job's end report is refused and the token stays valid forever.
The workbench keeps the token's database id and creation time (not the secret) in the
spawner's state, lets the token expire with the job's walltime, and revokes it when the server
ends. Ids are reused by the database once a row is gone, so a token is revoked only if it is
still the very row recorded: same id, same owner, same creation time.
"""

from __future__ import annotations

from datetime import timedelta

from jupyterhub import orm

GRACE_SECONDS = 600  # past the walltime: Slurm's KillWait, the end report, clock skew


def token_record(row) -> dict:
    """What identifies a token row in the spawner's state (no secret)."""
    return {"id": row.id, "user_id": row.user_id, "created": row.created.isoformat()}


def limit_token(db, token: str, seconds: float) -> dict | None:
    """Make `token` expire in `seconds` (+ grace); return its record for the spawner's state."""
    row = orm.APIToken.find(db, token) if token else None
    if row is None:
        return None
    row.expires_at = row.now() + timedelta(seconds=seconds + GRACE_SECONDS)
    db.commit()
    return token_record(row)


def is_record(value) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"id", "user_id", "created"}
        and type(value["id"]) is int
        and type(value["user_id"]) is int
        and isinstance(value["created"], str)
    )


def revoke_token(db, record: dict | None) -> bool:
    """Delete the token row `record` names, if it is still that row; True if one was deleted."""
    if not is_record(record):
        return False
    row = db.query(orm.APIToken).filter_by(id=record["id"]).first()
    if row is None or token_record(row) != record:
        return False
    db.delete(row)
    db.commit()
    return True
