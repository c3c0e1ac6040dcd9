"""How Slurm commands reach the cluster. `LocalTransport`: the hub runs on a cluster host and
uses sudo to act as the user, with argv lists only (never a shell)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass


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


@dataclass
class LocalTransport:
    """Run commands on this host; as another user through `sudo -n -u USER` (sudoers allowlist)."""

    sudo: str = "/usr/bin/sudo"
    path: str = "/usr/local/bin:/usr/bin:/bin"

    def argv_as(self, username: str | None, argv: list[str]) -> list[str]:
        if username is None:
            return list(argv)
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
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandTimeout(full_argv, timeout) from None
        return CommandResult(tuple(full_argv), proc.returncode, out.decode(errors="replace"),
                             err.decode(errors="replace"))

