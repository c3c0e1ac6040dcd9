"""The hub's and the proxy's log writer: `aifa-workbench log-to FILE`, run as the hub's user.

aifa-hubctl (root) pipes the hub's output into it, so that root never opens a file in the hub's
own directories. It copies stdin to FILE line by line: each line is written (and so flushed) at
once, a line longer than the cap keeps its start and says how many bytes were cut, and FILE is
rotated to FILE.1 ... FILE.K before it would pass its size limit. FILE is opened with O_NOFOLLOW
and must be a regular file: a symbolic link planted in its place is refused, never followed.
It ends at the end of its input (not on SIGINT, SIGHUP or SIGTERM), so it outlives what it logs.
"""

from __future__ import annotations

import os
import signal
import stat

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
MAX_LINE_BYTES = 16 * 1024
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LogFileError(OSError):
    """FILE cannot be a log: a symbolic link, not a regular file, or not writable."""


def open_log(path: str, mode: int = 0o600) -> int:
    """Open (or create, with `mode`) the log file for appending; returns its descriptor.
    A symbolic link, a FIFO, a device or a directory at `path` is refused with LogFileError."""
    try:
        fd = os.open(path, _FLAGS, mode)
    except OSError as e:
        if os.path.islink(path):
            raise LogFileError(f"{path} is a symbolic link; it is not followed (remove it)") from e
        raise LogFileError(f"cannot write {path}: {e.strerror}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LogFileError(f"{path} is not a regular file; not writing to it (remove it)")
    return fd


def rotate(path: str, backups: int) -> None:
    """FILE.(K-1) -> FILE.K, ..., FILE -> FILE.1; with no backups FILE is removed. Renames move
    names, never follow links, so a link planted as FILE.n is moved on, not written through."""
    for n in range(backups - 1, 0, -1):
        if os.path.lexists(f"{path}.{n}"):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    if backups > 0:
        os.replace(path, f"{path}.1")
    else:
        os.unlink(path)


def read_line(src, limit: int) -> list[bytes] | None:
    """The next line of the binary stream `src` as the pieces to write (ending in a newline), or
    None at its end. A line longer than `limit` bytes keeps its first `limit` bytes, followed by
    ' … (N bytes cut)'; the rest is read and dropped. Reads are readline(n) of small pieces, so
    no more than `limit` bytes of a line (and one piece) are ever held, however long it is."""
    piece_size = max(8192, limit // 256)  # at most 256 pieces for os.writev
    pieces, held = [], 0
    while held < limit:
        piece = src.readline(min(piece_size, limit - held))
        if not piece:
            return [*pieces, b"\n"] if pieces else None
        pieces.append(piece)
        held += len(piece)
        if piece.endswith(b"\n"):
            return pieces
    cut = 0
    while (rest := src.readline(piece_size)) and not rest.endswith(b"\n"):
        cut += len(rest)
    cut += len(rest.rstrip(b"\n"))
    return [*pieces, f" … ({cut} bytes cut)\n".encode() if cut else b"\n"]


def copy_lines(
    src,
    path: str,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    max_line_bytes: int = MAX_LINE_BYTES,
    mode: int = 0o600,
) -> None:
    """Copy `src` to the log `path` line by line until its end, rotating before `path` would pass
    `max_bytes` (a file holds at least one line, however long the cap lets it be). A log this
    user may not write (root's, from an older aifa-hubctl) is rotated away and a new one begun."""
    try:
        fd = open_log(path, mode)
    except LogFileError as e:
        if not isinstance(e.__cause__, PermissionError):
            raise
        rotate(path, backups)
        fd = open_log(path, mode)
    size = os.fstat(fd).st_size
    try:
        while (pieces := read_line(src, max_line_bytes)) is not None:
            length = sum(map(len, pieces))
            if size and size + length > max_bytes:
                os.close(fd)
                fd = -1
                rotate(path, backups)
                fd = open_log(path, mode)
                size = 0
            os.writev(fd, pieces)  # unbuffered: the line is in the file when this returns
            size += length
    finally:
        if fd >= 0:
            os.close(fd)


def main(path: str, max_bytes: int, backups: int, max_line_bytes: int) -> None:
    """`aifa-workbench log-to`: stdin to `path` until stdin ends, whatever signal the group gets."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    stdin = os.fdopen(0, "rb", buffering=64 * 1024, closefd=False)
    copy_lines(stdin, path, max_bytes, backups, max_line_bytes)
