"""Job control of one site: every Slurm command the hub runs there, and what its failures mean.

`JobControl` owns the commands (built by sites.slurm_cli) and turns their failures into typed
errors (sites.errors). How a command reaches the site is its runner's business: `LocalRunner`
(the hub on a cluster host, `sudo -u USER`) or `SshRunner` (a persistent SSH connection per site
user to the site's login node). A runner takes an argv list, never a shell string.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
from typing import Protocol

from . import home as site_home
from . import slurm_cli as cli
from .commands import CommandResult, CommandTimeout, bounded
from .errors import CredentialRefused, SiteError, SiteUnreachable, SlurmNotAnswering, SlurmRefused

log = logging.getLogger(__name__)

SLURM_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Communication connection failure|Zero Bytes were transmitted|Slurm backup controller in standby|"
    r"Problem talking to the database",
    re.IGNORECASE,
)
_SUDO_REFUSED = re.compile(r"a password is required|not allowed to execute|may not run|unknown user")
# sacctmgr's answers when what was asked is already so (a retried course step)
_NOTHING_TO_DO = re.compile(r"Nothing new added|already exists|Nothing deleted", re.IGNORECASE)
_ALREADY_ENDED = re.compile(r"Invalid job id specified|already completing or completed", re.IGNORECASE)


class Runner(Protocol):
    """How job control reaches a site (commands.LocalRunner, ssh.SshRunner): all it calls."""

    async def run(self, argv, *, as_user=None, stdin=None, env=None, timeout=30.0) -> CommandResult: ...

    async def write_private(self, as_user: str, path: str, content: str) -> None: ...


class JobControl:
    """Slurm on one site, through one runner.

    `shared_queries`: the hub's own user may read every workbench job of the site (the local
    cluster, where it coordinates the workbench accounts); queries then run as the hub. Otherwise
    (remote sites, `PrivateData=jobs`) each user's jobs are read with that user's own login."""

    def __init__(
        self,
        site_name: str,
        site_title: str,
        runner: Runner,
        slurm_bin: str = "/usr/bin",
        timeout: float = 30.0,
        shared_queries: bool = True,
    ):
        self.site_name, self.site_title, self.runner = site_name, site_title, runner
        self.slurm_bin, self.timeout, self.shared_queries = slurm_bin, timeout, shared_queries

    def query_user(self, hub_user: str | None) -> str | None:
        """Whose login reads the queue for `hub_user`'s jobs (None: the hub's own)."""
        return None if self.shared_queries else hub_user

    async def _run(self, argv, as_user=None, stdin=None, env=None, timeout=None) -> CommandResult:
        try:
            return await self.runner.run(argv, as_user=as_user, stdin=stdin, env=env, timeout=timeout or self.timeout)
        except CommandTimeout as e:
            raise SlurmNotAnswering(self.site_title, str(e)) from None

    def _failure(self, result: CommandResult, as_user: str | None, action: str = "the request") -> SiteError:
        err = result.stderr.strip()
        name = result.argv[0].rsplit("/", 1)[-1] if result.argv else "command"
        detail = f"{name} exit {result.returncode}: {bounded(err, 300)}"
        if _SUDO_REFUSED.search(err):
            return CredentialRefused(
                self.site_title,
                detail,
                f"The workbench may not act as '{as_user}' there: ask your workbench "
                "administrator to add you to the workbench users.",
            )
        if SLURM_UNREACHABLE.search(err) or not err:
            return SlurmNotAnswering(self.site_title, detail)
        reason = err.splitlines()[-1]
        for prefix in ("sbatch: error: ", "Batch job submission failed: "):
            reason = reason.removeprefix(prefix)
        return SlurmRefused(self.site_title, bounded(reason, 300), action=action)

    async def _output(self, argv, as_user=None) -> str:
        result = await self._run(argv, as_user=as_user)
        if not result.ok:
            raise self._failure(result, as_user)
        return result.stdout

    # --- a user's jobs --------------------------------------------------------------------------
    async def submit(
        self, user: str, script: str, env: dict | None = None, env_file: tuple[str, str] | None = None
    ) -> str:
        """Submit `script` (sent on stdin) as `user`; the job id. The job's JUPYTERHUB_* variables
        never go on a command line: `env` is sbatch's environment (local sites, through sudo), or
        `env_file` = (path, content) is written for the user only before sbatch (remote sites,
        whose script reads and deletes it)."""
        if env_file is not None:
            await self._write_private(user, *env_file)
            env = None
        result = await self._run(cli.sbatch_argv(self.slurm_bin), as_user=user, stdin=script, env=env)
        if not result.ok:
            if env_file is not None:
                await self._run(["rm", "-f", env_file[0]], as_user=user)
            raise self._failure(result, user, action="to start your server")
        job_id = cli.parse_job_id(result.stdout)
        if job_id is None:
            raise SlurmRefused(
                self.site_title,
                f"sbatch answered {bounded(result.stdout, 120)!r}, not a job id",
                action="to start your server",
            )
        return job_id

    async def run_on_site(self, argv, as_user: str, timeout: float, doing: str) -> CommandResult:
        """A command that is not Slurm's (`doing`: resolving a node, reading the runtime's stamp) on
        the site as `as_user`; a timeout is the site's failure in words, like Slurm's own."""
        try:
            return await self.runner.run(argv, as_user=as_user, timeout=timeout)
        except CommandTimeout:
            raise SiteUnreachable(self.site_title, f"{doing} took longer than {timeout:g} s") from None

    async def home(self, user: str, storage: dict[str, str] | None = None) -> site_home.HomeReport:
        """`user`'s home on the site, as their login shell says, after a write test there, and which
        of the project's directories `storage` ({kind: directory}) exist there for them to write;
        HomeUnusable (a sentence) if the home is missing, full or not writable."""
        argv = site_home.probe_argv(storage or {})
        result = await self.run_on_site(argv, user, 30, "reading your home")
        if not result.ok:  # the probe itself did not run: the site's failure, typed as any other
            raise self._failure(result, user, action="to read your home")
        report = site_home.parse_probe(result.stdout, storage)
        if report.problem:
            raise site_home.HomeUnusable(self.site_title, report)
        return report

    def commands(self, doing: str) -> "SiteCommands":
        """A runner for commands that are not Slurm's, whose timeouts are this site's failures."""
        return SiteCommands(self, doing)

    async def _write_private(self, user: str, path: str, content: str) -> None:
        try:
            await self.runner.write_private(user, path, content)
        except OSError as e:
            raise SlurmRefused(self.site_title, f"cannot write {path}: {e}", action="to start your server") from None

    async def jobs(self, job_ids, as_user: str | None = None) -> dict[str, cli.JobInfo]:
        """The state of each job asked for; GONE for a job Slurm no longer knows."""
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        result = await self._run(cli.jobs_argv(self.slurm_bin, ids), as_user=as_user)
        if not result.ok and not cli.UNKNOWN_JOB.search(result.stderr):
            raise self._failure(result, as_user)
        seen = cli.parse_squeue(result.stdout) if result.ok else {}
        return {job_id: seen.get(job_id, cli.JobInfo(job_id, "GONE")) for job_id in ids}

    async def cancel(self, user: str, job_id: str) -> None:
        """Cancel `user`'s job; a job that already ended is not an error."""
        result = await self._run(cli.cancel_argv(self.slurm_bin, job_id), as_user=user)
        if not result.ok and not _ALREADY_ENDED.search(result.stderr):
            raise self._failure(result, user)

    async def tail(self, user: str, path: str, max_bytes: int) -> str:
        """The end of a file the user owns (a job's output), at most `max_bytes`; "" if unreadable."""
        try:
            result = await self._run(cli.tail_argv(path, max_bytes), as_user=user, timeout=15)
        except SiteError:
            return ""
        return result.stdout if result.ok else ""

    # --- what a user may use, and how busy the site is ---------------------------------------------
    async def accounts(self, user: str, site_user: str | None = None) -> tuple[str, ...]:
        """`user`'s Slurm accounts, default first. Raises when Slurm does not answer: an empty
        answer means "no accounts", never "accounting was down"."""
        output = await self._output(cli.accounts_argv(self.slurm_bin, site_user or user), as_user=self.query_user(user))
        return cli.parse_user_accounts(output)

    async def budgets(self, user: str, accounts, site_user: str | None = None) -> dict[str, dict]:
        """The budgets (GrpTRESMins on billing) of `accounts` that bind `user`, in billing-minutes."""
        accounts = [a for a in accounts if cli.is_slurm_name(a)]
        if not accounts:
            return {}
        records, asked = [], set()
        wanted = set(accounts)
        for _ in range(6):  # the accounts, then their parents up the tree (Slurm checks each)
            output = await self._output(cli.budgets_argv(self.slurm_bin, sorted(wanted)), as_user=self.query_user(user))
            records += cli.parse_assoc_records(output)
            asked |= wanted
            wanted = cli.parents_to_ask(records, asked)
            if not wanted:
                break
        return cli.budgets_from_records(records, accounts, site_user or user)

    async def project_file(self, user: str, path_pattern: str, project: str) -> str:
        """A project's file on the site, read as the user ("" when it is not there)."""
        argv = cli.project_file_argv(path_pattern, project)
        if argv is None:
            return ""
        result = await self._run(argv, as_user=self.query_user(user) or user, timeout=15)
        return result.stdout if result.ok else ""

    async def reservations_listing(self, as_user: str | None = None) -> str:
        return await self._output(cli.reservations_argv(self.slurm_bin), as_user=as_user)

    async def partition_load(self, as_user: str | None = None) -> dict[str, dict]:
        nodes_argv, pending_argv = cli.load_argvs(self.slurm_bin)
        return cli.parse_partition_load(
            await self._output(nodes_argv, as_user), await self._output(pending_argv, as_user)
        )

    async def ping(self, as_user: str | None = None) -> None:
        """Raise unless the site's controller answers UP."""
        result = await self._run(cli.ping_argv(self.slurm_bin), as_user=as_user, timeout=min(self.timeout, 20))
        said = " ".join((result.stdout + result.stderr).split())
        if not result.ok or " is UP" not in said:
            raise SlurmNotAnswering(self.site_title, f"scontrol ping: {bounded(said, 200) or 'nothing'}")

    # --- courses (the local cluster: the hub coordinates the projects; reservations via the helper) ---
    async def _change(self, argv, what: str) -> None:
        result = await self._run(argv)
        if not result.ok and not _NOTHING_TO_DO.search(result.stdout + result.stderr):
            raise SlurmRefused(self.site_title, bounded((result.stderr or result.stdout).strip(), 300), action=what)

    async def account_exists(self, cluster: str, account: str) -> bool:
        return bool((await self._output(cli.account_exists_argv(self.slurm_bin, cluster, account))).strip())

    async def add_course_account(
        self, cluster: str, account: str, parent: str, billing_minutes: int, max_wall_minutes: int
    ) -> None:
        await self._change(
            cli.course_account_argv(self.slurm_bin, cluster, account, parent, billing_minutes, max_wall_minutes),
            "to make the course's account",
        )
        await self._change(
            cli.course_coordinator_argv(self.slurm_bin, account, pwd.getpwuid(os.getuid()).pw_name),
            "to watch the course's jobs",
        )

    async def course_member(
        self, cluster: str, user: str, account: str, add: bool = True, partition: str = "", gpus: int = 0
    ) -> None:
        await self._change(
            cli.course_member_argv(self.slurm_bin, cluster, user, account, add, partition, gpus),
            "to add you to the course" if add else "to end a participation",
        )

    async def cancel_account_jobs(self, account: str) -> None:
        result = await self._run(cli.cancel_account_jobs_argv(self.slurm_bin, account))
        if not result.ok:
            raise self._failure(result, None, action="to end the course's jobs")

    async def remove_course_account(self, cluster: str, account: str) -> None:
        await self._change(
            cli.course_account_removal_argv(self.slurm_bin, cluster, account), "to close the course's account"
        )

    async def course_helper(self, helper: str, action: str, **options) -> None:
        """Reserve, unreserve, release a guest account: as root through the helper's sudo rule."""
        result = await self._run(cli.course_helper_argv(helper, action, **options), timeout=180)
        if not result.ok:
            raise SlurmRefused(
                self.site_title,
                bounded(result.stderr.strip() or f"exit {result.returncode}", 300),
                action=f"to {action.replace('-', ' ')} for the course",
            )

    # --- reconciliation -------------------------------------------------------------------------
    async def workbench_jobs(self, names: str, as_user: str | None = None) -> str:
        """squeue lines `id|user|name` of the jobs named exactly one of `names` (comma-separated)."""
        return await self._output(cli.workbench_jobs_argv(self.slurm_bin, names), as_user)

    async def is_workbench_job(self, job_id: str, name: str, owner: str, as_user: str | None = None) -> bool:
        result = await self._run(cli.confirm_argv(self.slurm_bin, job_id, name, owner), as_user=as_user)
        return result.ok and result.stdout.split() == [job_id]


class SiteCommands:
    """Job control's runner for other commands on the site (what `installed_runtimes` calls)."""

    def __init__(self, control: JobControl, doing: str):
        self.control, self.doing = control, doing

    async def run(self, argv, *, as_user: str, timeout: float = 30.0) -> CommandResult:
        return await self.control.run_on_site(argv, as_user, timeout, self.doing)
