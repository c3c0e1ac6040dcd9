"""WorkbenchSlurmSpawner: batchspawner's SlurmSpawner with every path from user to Slurm replaced.

Kept from batchspawner: the start/poll/stop life cycle and Slurm state parsing.
Replaced: shell command strings (argv lists through a transport), the merge of `user_options`
into template variables (a validated JobRequest instead), and errors users can read.
"""
from __future__ import annotations

import pwd
import re

from batchspawner import JobStatus, SlurmSpawner
from tornado import web
from traitlets import Dict, Float, Instance, Integer, Unicode, default

from .request import PartitionLimits, RequestError, parse_job_request
from .script import ScriptContext, render_batch_script
from .transport import CommandResult, CommandTimeout, LocalTransport

SLURM_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Communication connection failure|Zero Bytes were transmitted",
    re.IGNORECASE,
)
_JOB_ID = re.compile(r"(\d+)(;[\w.-]+)?")


class SpawnError(RuntimeError):
    """A spawn failed for a reason the user should read; JupyterHub shows `jupyterhub_message`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


def explain_sbatch_failure(username: str, result: CommandResult) -> str:
    err = result.stderr.strip()
    if "a password is required" in err or "not allowed to execute" in err or "may not run" in err:
        return (f"The workbench is not allowed to start jobs for '{username}'. "
                "Ask your workbench administrator to add you to the workbench users.")
    if SLURM_UNREACHABLE.search(err):
        return ("The Slurm scheduler is not answering, so your server was not started. "
                "Try again in a few minutes; if it keeps happening, tell your workbench administrator.")
    reason = err.splitlines()[-1] if err else f"exit status {result.returncode}"
    reason = reason.removeprefix("sbatch: error: ").removeprefix("Batch job submission failed: ")
    return f"Slurm refused to start your server: {reason}."


def export_names(env: dict) -> tuple[str, ...]:
    """The environment the job inherits: the hub's JUPYTERHUB_* variables and nothing else."""
    return tuple(sorted(n for n in env if n.startswith("JUPYTERHUB_") or n == "JPY_API_TOKEN"))


class WorkbenchSlurmSpawner(SlurmSpawner):
    partitions = Dict(
        help="Partitions users may ask for: name -> {'max_gpus': int, 'max_hours': int}.",
    ).tag(config=True)
    default_partition = Unicode("cpu", help="Partition used when a request names none.").tag(config=True)
    venv_dir = Unicode(
        "/opt/aifa-workbench/venv",
        help="Virtual environment, readable by job users, whose jupyterhub-singleuser the job runs.",
    ).tag(config=True)
    slurm_bin = Unicode("/usr/bin", help="Directory of sbatch, squeue and scancel.").tag(config=True)
    job_cpus = Integer(1, help="CPUs per notebook job.").tag(config=True)
    job_memory_mb = Integer(2048, help="Memory per notebook job, in MB.").tag(config=True)
    command_timeout = Float(30, help="Seconds before a Slurm command is given up on.").tag(config=True)
    transport = Instance(LocalTransport, help="How Slurm commands are run.")
    job_request = None

    @default("transport")
    def _default_transport(self):
        return LocalTransport()

    @default("env_keep")
    def _default_env_keep(self):
        return []

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, options: spawner.apply_job_request(options)

    def partition_limits(self) -> dict[str, PartitionLimits]:
        return {name: PartitionLimits(name, int(v["max_gpus"]), int(v["max_hours"]))
                for name, v in self.partitions.items()}

    def apply_job_request(self, options):
        try:
            self.job_request = parse_job_request(options, self.partition_limits(), self.default_partition)
        except RequestError as e:
            raise web.HTTPError(400, str(e)) from None

    async def run_command(self, cmd, input=None, env=None):
        raise NotImplementedError("shell command strings are not used; see LocalTransport")

    def _slurm(self, name: str) -> str:
        return f"{self.slurm_bin}/{name}"

    async def submit_batch_script(self):
        if self.job_request is None:
            self.apply_job_request(self.user_options or {})
        username = self.user.name
        env = self.get_env()
        ctx = ScriptContext(
            username=username,
            home=pwd.getpwnam(username).pw_dir,
            venv_bin=f"{self.venv_dir}/bin",
            launch_argv=(f"{self.venv_dir}/bin/batchspawner-singleuser",
                         f"{self.venv_dir}/bin/jupyterhub-singleuser", *self.get_args()),
            export_names=export_names(env),
            cpus=self.job_cpus,
            memory_mb=self.job_memory_mb,
        )
        script = render_batch_script(self.job_request, ctx)
        self.log.debug("Batch script for %s:\n%s", username, script)
        try:
            result = await self.transport.run([self._slurm("sbatch"), "--parsable"], as_user=username,
                                              stdin=script, env=env, timeout=self.command_timeout)
        except CommandTimeout:
            raise SpawnError("The Slurm scheduler did not answer in time, so your server was not "
                             "started. Try again in a few minutes.") from None
        if not result.ok:
            self.log.error("sbatch for %s failed (%s): %s", username, result.returncode, result.stderr.strip())
            raise SpawnError(explain_sbatch_failure(username, result))
        match = _JOB_ID.fullmatch(result.stdout.strip())
        if not match:
            raise SpawnError(f"Slurm answered in a way the workbench does not understand: {result.stdout!r}.")
        self.job_id = match.group(1)
        self.log.info("Submitted job %s for %s in partition %s", self.job_id, username,
                      self.job_request.partition)
        return self.job_id

    async def query_job_status(self):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        argv = [self._slurm("squeue"), "--noheader", f"--jobs={self.job_id}", "--format=%T %B"]
        try:
            result = await self.transport.run(argv, timeout=self.command_timeout)
        except CommandTimeout:
            self.log.warning("squeue for job %s timed out; keeping its server", self.job_id)
            return JobStatus.UNKNOWN
        if not result.ok:
            if "Invalid job id" in result.stderr:
                self.job_status = ""
                return JobStatus.NOTFOUND
            # Slurm not answering is not "job gone" (batchspawner#315).
            self.log.warning("squeue for job %s failed: %s", self.job_id, result.stderr.strip())
            return JobStatus.UNKNOWN
        self.job_status = result.stdout.strip()
        if self.state_isrunning():
            return JobStatus.RUNNING
        if self.state_ispending():
            return JobStatus.PENDING
        return JobStatus.NOTFOUND

    async def cancel_batch_job(self):
        if not self.job_id:
            return
        argv = [self._slurm("scancel"), self.job_id]
        result = await self.transport.run(argv, as_user=self.user.name, timeout=self.command_timeout)
        if not result.ok:
            self.log.warning("scancel %s failed: %s", self.job_id, result.stderr.strip())
