"""Render the batch script of a notebook job: a pure function of the request, the site catalogue
and the hub's own settings. One Jinja2 template per site family, StrictUndefined."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from importlib import resources

import jinja2

from aifa_workbench.model.catalogue import Site
from aifa_workbench.model.job_env import site_job_lines
from aifa_workbench.sites.home import plain_dir
from aifa_workbench.sites.runtime import env_runtime_dir
from aifa_workbench.sites.slurm_cli import job_name

from aifa_workbench.model.request import JobRequest

# What may appear after `#SBATCH --opt=`: sbatch parses these lines itself (no shell), so
# instead of quoting we refuse anything but a plain token.
_SBATCH_SAFE = re.compile(r"[A-Za-z0-9_.:,=/%@+-]+")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


class ScriptError(ValueError):
    """A value cannot be written into a batch script safely."""


def sbatch_value(value) -> str:
    text = str(value)
    if not _SBATCH_SAFE.fullmatch(text):
        raise ScriptError(f"refusing to write {text!r} into an #SBATCH line")
    return text


@dataclass(frozen=True)
class ScriptContext:
    """Everything the template needs besides the request and the catalogue; all from the hub's side."""

    username: str
    home: str
    venv_bin: str
    launch_argv: tuple[str, ...]
    export_names: tuple[str, ...]
    warn_minutes: tuple[int, ...] = (10, 2)
    catalogue_dir: str = ""
    slurm_bin: str = "/usr/bin"
    hub_id: str = "hub"
    # Remote sites: the job's JUPYTERHUB_* variables are in this file (0600, written by the hub
    # over SFTP), which the script reads and deletes; nothing crosses on sbatch's environment.
    env_file: str | None = None
    # Container environments: the runtime made inside the image (install-runtime), and the
    # directories the container must see for it.
    container_runtime: str = ""
    container_binds: tuple[str, ...] = ()
    # Reverse reach: the job holds a tunnel to the hub's gateway (its credential is in env_file).
    tunnel: bool = False
    # Forward reach: the job calls the hub over TLS and trusts the CA in env_file
    # (AIFA_WORKBENCH_HUB_CA_PEM) for it, nothing else (sites.hub_api_tls says why).
    hub_ca: bool = False
    # The hub user the job is for: its name carries it (the reconcilers look for it), whoever the
    # job runs as on the site (a site username, a course's guest account).
    hub_user: str = ""
    # The project's shared folder and scratch on a remote site, where the site said at this start
    # that they exist and the user may write there ("": none); the scratch takes the caches.
    project_dir: str = ""
    scratch_dir: str = ""


@dataclass(frozen=True)
class RuntimePaths:
    """Where a job finds the workbench's software on its node."""

    venv_bin: str  # the runtime's bin: the job report, the starter notebooks (inside the image for a container's)
    server_bin: str  # jupyterhub-singleuser's
    container_runtime: str = ""  # a container environment's runtime (made inside its image)
    container_binds: tuple[str, ...] = ()


def helper_environment(site: Site, environment: str) -> str:
    """The environment whose runtime runs a job's helpers (its tunnel, which needs the node's
    `ssh`; the starter notebooks' copy; the end report) on the node: the chosen one, unless it runs
    in an image (an image may have no ssh), then the site's default or first environment of the
    node's own; where the site has none, the chosen one (the helpers then run in its image)."""
    if not site.environments[environment].container:
        return environment
    native = [slug for slug, env in site.environments.items() if not env.container]
    if not native:
        return environment
    return site.default_environment if site.default_environment in native else native[0]


def runtime_paths(site: Site, environment: str, hub_venv: str) -> RuntimePaths:
    """The hub's own venv on the local site; on a remote one the runtime install-runtime made for
    the environment (inside its image for a container environment, with the runtime directory
    bound into the container; its helpers then from the node's own, helper_environment)."""
    if site.transport != "ssh":
        return RuntimePaths(f"{hub_venv}/bin", f"{hub_venv}/bin")
    current = f"{env_runtime_dir(site.paths.runtime, environment)}/current"
    if not site.environments[environment].container:
        return RuntimePaths(f"{current}/bin", f"{current}/bin")
    helper = f"{env_runtime_dir(site.paths.runtime, helper_environment(site, environment))}/current/bin"
    return RuntimePaths(helper, f"{current}/bin", current, (site.paths.runtime,))


SERVER_EXTENSION = "aifa_workbench.extensions.server_extension"


def server_launch_argv(venv_bin: str, *args: str) -> tuple[str, ...]:
    """The job's server: jupyterhub-singleuser on a port the OS picks, with the workbench's
    server extension, which reports that port to the hub once the server listens."""
    return (
        f"{venv_bin}/jupyterhub-singleuser",
        "--ServerApp.port=0",
        f"--ServerApp.jpserver_extensions={SERVER_EXTENSION}=True",
        *args,
    )


def format_walltime(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:00"


def template_source(name: str) -> str:
    return resources.files("aifa_workbench.spawners").joinpath("templates", name).read_text()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(template_source),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    env.filters["sbatch_value"] = sbatch_value
    return env


_ENV = _environment()


def render_env_file(env: dict) -> str:
    """The job's variables as shell assignments, each value quoted (it may hold anything)."""
    bad_names = [n for n in env if not _ENV_NAME.fullmatch(n)]
    if bad_names:
        raise ScriptError(f"refusing to export environment names {bad_names!r}")
    return "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in sorted(env.items()))


def render_batch_script(request: JobRequest, site: Site, ctx: ScriptContext) -> str:
    bad_names = [n for n in ctx.export_names if not _ENV_NAME.fullmatch(n)]
    if bad_names:
        raise ScriptError(f"refusing to export environment names {bad_names!r}")
    odd_dirs = [d for d in (ctx.project_dir, ctx.scratch_dir) if d and not plain_dir(d)]
    if odd_dirs:
        raise ScriptError(f"refusing project directories that are not plain absolute paths: {odd_dirs!r}")
    partition = site.partitions[request.partition]
    template = _ENV.get_template(f"{partition.family}.sh.j2")
    environment = site.environments[request.environment]
    # the job's helpers (tunnel, starter notebooks, end report) run on the node from a runtime of
    # the node's own; only where the site has none, inside the image, through its runscript
    helper = (
        ("singularity", "run", "--bind", ",".join(ctx.container_binds), environment.container)
        if ctx.container_runtime and ctx.venv_bin.startswith(ctx.container_runtime + "/")
        else ()
    )
    return template.render(
        request=request,
        site=site,
        partition=partition,
        environment=environment,
        site_job_lines=site_job_lines(partition.family, environment, request.whole_node, request.gpus),
        username=ctx.username,
        home=ctx.home,
        venv_bin=ctx.venv_bin,
        launch_argv=ctx.launch_argv,
        helper_argv=(*helper, f"{ctx.venv_bin}/python", "-m"),
        report_argv=(*helper, f"{ctx.venv_bin}/python", "-m", "aifa_workbench.extensions.job_report"),
        export_names=ctx.export_names,
        warn_minutes=[int(m) for m in ctx.warn_minutes],
        catalogue_dir=ctx.catalogue_dir,
        project_dir=ctx.project_dir,
        scratch_dir=ctx.scratch_dir,
        slurm_bin=ctx.slurm_bin,
        env_file=ctx.env_file,
        container_runtime=ctx.container_runtime,
        container_binds=ctx.container_binds,
        # Slurm's commands for a notebook in an image without them: a relay on the node, from
        # the node's runtime (none where the helpers themselves run in the image)
        slurm_relay=bool(environment.container) and not helper,
        tunnel=ctx.tunnel,
        hub_ca=ctx.hub_ca,
        # forward reach: JupyterLab trusts the hub's CA alone (in a container: the image's python,
        # from the runtime made there, which the wrapper has activated)
        hub_trust_argv=(
            (
                "python" if ctx.container_runtime else f"{ctx.venv_bin}/python",
                "-m",
                "aifa_workbench.extensions.hub_trust",
            )
            if ctx.hub_ca
            else ()
        ),
        walltime=format_walltime(request.hours),
        job_name=job_name(ctx.hub_id, ctx.hub_user or ctx.username),
        log_path=f"{ctx.home}/.aifa-workbench-job-%j.log",
    )
