"""Commands on a site's login node over SSH, as the hub user's own account on that site.

One persistent asyncssh connection per (site user, login host), shared by every command of that
user there; at most `max_channels` commands at once on it (below sshd's MaxSessions, 10 by
default); keepalives notice a dead link; a lost connection is made again on the next command,
with a growing pause after failed attempts. The login node's host key is pinned (the catalogue's):
any other key is refused, never learnt. Every argv is joined with shlex.join: the remote side runs
it through the user's login shell. Nothing secret is put on a command line.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import shlex
import time
from dataclasses import dataclass
from typing import Callable

from .ssh_library import asyncssh

from .commands import MAX_OUTPUT_BYTES, CommandResult, CommandTimeout, bounded, read_capped
from .errors import CredentialRefused, HostKeyMismatch, SiteUnreachable

log = logging.getLogger(__name__)
OPEN_RETRY_PAUSES = (0.05, 0.2, 0.5, 1.0, None)  # between tries of a session sshd would not open


class _NotOpened(Exception):
    """sshd did not open the session or refused its exec request: the command did not run."""


@dataclass(frozen=True)
class Credential:
    """Who the hub user is on the site: their site username and the private key the hub holds."""

    username: str
    private_key: asyncssh.SSHKey


@dataclass(frozen=True)
class LoginNode:
    host: str
    port: int
    host_keys: tuple[str, ...]  # OpenSSH public key lines the login node may present


class SshConnection:
    """One site user's connection to one login node, made on first use and again after a loss."""

    def __init__(
        self,
        login: LoginNode,
        credential: Credential,
        site_title: str,
        *,
        max_channels: int = 8,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        max_backoff: float = 30.0,
    ):
        self.login, self.credential, self.site_title = login, credential, site_title
        self.connect_timeout = connect_timeout
        self.keepalive_interval, self.keepalive_count_max = keepalive_interval, keepalive_count_max
        self.max_backoff = max_backoff
        self.channels = asyncio.Semaphore(max_channels)
        self.connects = 0  # logins made (one per connection)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._backoff, self._retry_at = 0.0, 0.0
        self._last_error: Exception | None = None

    def _known_hosts(self):
        return ([asyncssh.import_public_key(line) for line in self.login.host_keys], [], [])

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            if self._retry_at > time.monotonic() and self._last_error is not None:
                raise self._last_error  # what the last login said, until the pause after it is over
            try:
                self._conn = await self._connect()
            except Exception as error:
                self._backoff = min(max(self._backoff * 2, 0.5), self.max_backoff)
                self._retry_at = time.monotonic() + self._backoff
                self._last_error = self._login_error(error)
                raise self._last_error from None
            self._backoff, self._retry_at = 0.0, 0.0
            self.connects += 1
            return self._conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            self.login.host,
            self.login.port,
            username=self.credential.username,
            client_keys=[self.credential.private_key],
            known_hosts=self._known_hosts(),
            agent_path=None,
            config=[],
            preferred_auth="publickey",
            password=None,
            connect_timeout=self.connect_timeout,
            login_timeout=self.connect_timeout,
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
        )

    def _login_error(self, error: Exception):
        where = f"{self.credential.username}@{self.login.host}:{self.login.port}"
        if isinstance(error, asyncssh.HostKeyNotVerifiable):
            log.error("Host key of %s is not the pinned one: %s", where, error)
            return HostKeyMismatch(self.site_title, f"{where}: {error}")
        if isinstance(error, asyncssh.PermissionDenied):
            return CredentialRefused(self.site_title, f"{where}: key refused")
        return SiteUnreachable(self.site_title, f"{where}: {type(error).__name__}: {bounded(str(error), 200)}")

    def drop(self, conn=None) -> None:
        """Close the connection (or only `conn`, if it is still the current one)."""
        if self._conn is not None and (conn is None or self._conn is conn):
            self._conn.close()
            self._conn = None

    async def run(
        self, argv, *, stdin: str | None = None, timeout: float = 30.0, max_output_bytes: int = MAX_OUTPUT_BYTES
    ) -> CommandResult:
        """Run `argv` on the login node. A session sshd refused to open (it frees a closed one's
        slot a moment after the close, so MaxSessions can be hit briefly) never started the
        command, and is tried again after a pause."""
        command = shlex.join(argv)
        for pause in OPEN_RETRY_PAUSES:
            async with self.channels:  # the timeout counts from here: waiting for a slot is not Slurm's
                conn = await self.connection()
                try:
                    return await asyncio.wait_for(self._run_on(conn, command, argv, stdin, max_output_bytes), timeout)
                except asyncio.TimeoutError:
                    raise CommandTimeout(argv, timeout) from None
                except _NotOpened:
                    pass  # the command never started: safe to try again, even sbatch
                except (asyncssh.Error, OSError) as error:
                    if conn.is_closed():
                        self.drop(conn)  # the link broke: the next command logs in again
                    raise SiteUnreachable(
                        self.site_title, f"{argv[0]}: {type(error).__name__}: {bounded(str(error), 200)}"
                    ) from None
            if pause is None:
                break
            await asyncio.sleep(pause)
        raise SiteUnreachable(self.site_title, f"{argv[0]}: the login node refused to open a session")

    @staticmethod
    async def _run_on(conn, command: str, argv, stdin, cap: int) -> CommandResult:
        try:
            process = await conn.create_process(command, encoding=None)
        except asyncssh.ChannelOpenError as refused:  # no session, or its exec request was refused
            raise _NotOpened() from refused
        async with process:
            try:
                if stdin is not None:
                    process.stdin.write(stdin.encode())
                process.stdin.write_eof()
            except (BrokenPipeError, ConnectionResetError, asyncssh.BreakReceived):
                pass  # the command ended without reading all of its input: its status says how
            (out, _), (err, _) = await asyncio.gather(
                read_capped(process.stdout, cap), read_capped(process.stderr, cap)
            )
            completed = await process.wait(check=False)
        status = completed.exit_status if completed.exit_status is not None else 255
        return CommandResult(tuple(argv), status, out.decode(errors="replace"), err.decode(errors="replace"))


class SshRunner:
    """A site's runner: each hub user's commands on their own connection to the login node."""

    def __init__(self, site_title: str, login: LoginNode, credential_of: Callable[[str], Credential], **options):
        self.site_title, self.login, self.credential_of, self.options = site_title, login, credential_of, options
        self.connections: dict[tuple[str, str], SshConnection] = {}

    def connection_for(self, hub_user: str) -> SshConnection:
        credential = self.credential_of(hub_user)
        key = (credential.username, self.login.host)
        connection = self.connections.get(key)
        if connection is None or connection.credential != credential:
            if connection is not None:
                connection.drop()
            connection = self.connections[key] = SshConnection(self.login, credential, self.site_title, **self.options)
        return connection

    async def run(self, argv, *, as_user=None, stdin=None, env=None, timeout=30.0) -> CommandResult:
        if as_user is None:
            raise ValueError("a remote site has no login of the hub's own: name the user")
        if env:
            raise ValueError("environment variables do not cross SSH (sshd drops them); send them in a file")
        return await self.connection_for(as_user).run(argv, stdin=stdin, timeout=timeout)

    async def write_private(self, as_user: str, path: str, content: str) -> None:
        """Write a new file only the user can read (0600, in a 0700 directory), over SFTP."""
        connection = self.connection_for(as_user)
        conn = await connection.connection()
        try:
            async with conn.start_sftp_client() as sftp:
                directory = posixpath.dirname(path)
                if not await sftp.exists(directory):
                    await sftp.mkdir(directory, asyncssh.SFTPAttrs(permissions=0o700))
                async with sftp.open(path, "xb", asyncssh.SFTPAttrs(permissions=0o600)) as remote:
                    await remote.write(content.encode())
        except (asyncssh.SFTPError, asyncssh.Error, OSError) as error:
            if conn.is_closed():
                connection.drop(conn)
            raise OSError(f"{type(error).__name__}: {bounded(str(error), 200)}") from None

    def close(self) -> None:
        for connection in self.connections.values():
            connection.drop()
