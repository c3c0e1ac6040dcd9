"""How commands run on this host. `LocalRunner`: the hub runs on a cluster host and
uses sudo to act as the user, with argv lists only (never a shell)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Callable

MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # what is kept of a command's stdout (and of stderr); the rest is read and dropped
LOG_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bounded(text: str, limit: int = LOG_CHARS) -> str:
    """Text a command or a job printed, fit for one log line: control characters escaped
    (no forged lines), at most `limit` characters."""
    text = text.strip()
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text + (f"… ({cut} more characters)" if cut > 0 else "")


async def read_capped(stream, cap: int) -> tuple[bytes, bool]:
    """Read `stream` to its end keeping at most `cap` bytes; (kept, whether some were dropped)."""
    chunks, size = [], 0
    while chunk := await stream.read(65536):
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)
    return b"".join(chunks), size > cap


async def _feed(stream, data: bytes | None) -> None:
    if stream is None:
        return
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stream.close()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandTimeout(RuntimeError):
    def __init__(self, argv, seconds):
        super().__init__(f"{argv[0]} did not finish within {seconds:g} s")
        self.argv = tuple(argv)


async def _end(proc, grace: float = 2.0) -> None:
    """End a command that ran too long, in bounded time. SIGKILL would reach only sudo (the command
    runs as another user, whom the hub may not signal); sudo passes SIGTERM on to it. A command
    that still holds its pipes open is left to its own timeout (`timeout` in the sudo rule)."""
    for signal_it in (proc.terminate, proc.kill):
        try:
            signal_it()
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), grace)
            return
        except asyncio.TimeoutError:
            continue


@dataclass
class LocalRunner:
    """Run commands on this host; as another user through `sudo -n -u USER` (sudoers allowlist)."""

    sudo: str = "/usr/bin/sudo"
    path: str = "/usr/local/bin:/usr/bin:/bin"
    max_output_bytes: int = MAX_OUTPUT_BYTES
    name_of: Callable[[str], str] | None = None  # hub user -> their account here (a course's guest)

    def argv_as(self, username: str | None, argv: list[str]) -> list[str]:
        if username is None:
            return list(argv)
        if self.name_of is not None:
            username = self.name_of(username)
        return [self.sudo, "-n", "-u", username, "--", *argv]

    async def run(self, argv, *, as_user=None, stdin=None, env=None, timeout=30.0) -> CommandResult:
        full_argv = self.argv_as(as_user, list(argv))
        proc_env = {"PATH": self.path, "LANG": "C.UTF-8", **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            *full_argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=proc_env,
            start_new_session=True,
        )
        cap = self.max_output_bytes
        try:
            _, (out, _), (err, _), _ = await asyncio.wait_for(
                asyncio.gather(
                    _feed(proc.stdin, stdin.encode() if stdin is not None else None),
                    read_capped(proc.stdout, cap),
                    read_capped(proc.stderr, cap),
                    proc.wait(),
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            await _end(proc)
            raise CommandTimeout(full_argv, timeout) from None
        return CommandResult(
            tuple(full_argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
