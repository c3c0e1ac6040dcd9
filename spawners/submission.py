"""What goes with a job to its site besides its batch script: the runtime check of a remote
site, the job's private env file, and sbatch's failures in words."""

from __future__ import annotations

import secrets
from pathlib import Path

from aifa_workbench.sites import runtime
from aifa_workbench.sites.errors import CredentialRefused, HostKeyMismatch, SiteError

from .errors import SpawnError
from .script import helper_environment, render_env_file


def export_names(env: dict) -> tuple[str, ...]:
    """The environment the job inherits: the hub's JUPYTERHUB_* variables and nothing else."""
    return tuple(sorted(n for n in env if n.startswith("JUPYTERHUB_") or n == "JPY_API_TOKEN"))


def env_file(home: str, env: dict, reach_env: dict) -> tuple[str, str]:
    """(path, content) of the job's env file on a remote site: what it inherits, and its reach's
    secrets, written for the user only (never on a command line)."""
    job_env = {n: env[n] for n in export_names(env)}
    job_env.update(reach_env)
    return env_file_path(home), render_env_file(job_env)


def env_file_path(home: str, unique: str = "") -> str:
    """Where a job's env file goes on its site: a name of its own per job (`unique`: its random part)."""
    return f"{home}/.aifa-workbench/job-env-{unique or secrets.token_hex(8)}"


async def check_runtime(site, environment: str, control, user: str, wheelhouse: str, log) -> None:
    """A remote site must run the job runtime of this hub's code for the chosen environment (and
    for the one whose runtime runs the job's helpers on the node)."""
    wanted = runtime.runtime_id(Path(wheelhouse))
    slugs = list(dict.fromkeys([environment, helper_environment(site, environment)]))  # the job's helpers' too
    found = await runtime.installed_runtimes(
        control.commands("reading the version of its workbench software"), user, site.paths.runtime, slugs
    )
    for slug in slugs:
        if found[slug] == wanted:
            continue
        log.error("Runtime of %s on %s: %s, this hub's: %s", slug, site.name, found[slug], wanted)
        title = site.environments[slug].title
        state = "is outdated there" if found[slug] else "is not installed there yet"
        raise SpawnError(
            f"The workbench's software for “{title}” on {site.title} {state}, so your server was not "
            "started. Your workbench administrator fixes it with "
            f"`aifa-workbench install-runtime {site.name} {slug}`; try again after that, or choose "
            "another environment."
        )


def refused_sentence(error: SiteError, keys_page_url: str) -> str:
    """sbatch's failure for the user; a refused key names the keys page."""
    if isinstance(error, CredentialRefused) and keys_page_url and not isinstance(error, HostKeyMismatch):
        return f"{error.sentence} Your key for it, and how to give it to the site: {keys_page_url}"
    return error.sentence
