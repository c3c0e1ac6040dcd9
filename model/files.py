"""Files written whole or not at all: the hub's state, its keys and certificates, a job's notes.

Every layer writes through `write_atomically` (the model imports nothing of ours, so the hub, site
control and the code inside a job may all use it)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path, data: bytes | str, *, mode: int = 0o600, fsync: bool = False, replace: bool = True) -> None:
    """Write `data` (str as UTF-8) to a new file beside `path`, then put it in place: a reader sees
    the old file or the whole new one, never part of one.

    mode: the new file's permissions, less the umask (as os.open); never follows a link.
    fsync: on disk before it takes the place (state a crash must not lose or truncate).
    replace: False never overwrites: raises FileExistsError where `path` exists (a claim, or a
    key two processes made at once: the first one stays)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path, follow_symlinks=False)  # fails where the name exists; a rename would overwrite it
    finally:
        temporary.unlink(missing_ok=True)
