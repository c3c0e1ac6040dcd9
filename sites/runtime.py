"""The job's software on a site: the workbench's job runtime (jupyterhub-singleuser, JupyterLab,
the server extension, the walltime guard, ipywidgets, dask-jobqueue, dask-labextension,
jupyter-server-proxy, at the versions pyproject.toml pins), installed into the site's runtime
directory over SSH and stamped with its id, so that the hub can tell whether a site runs the
runtime of this hub's code.

Layout on the site: <runtime>/wheelhouse (the wheels, uploaded), <runtime>/<id>/ (a venv made
with the site's Python, installed from those wheels only), <runtime>/current -> <id>, and
<runtime>/<id>/aifa-workbench-runtime holding the id.
"""
from __future__ import annotations

import posixpath
import shlex
from pathlib import Path

from .commands import bounded
from .errors import SiteError

STAMP = "aifa-workbench-runtime"


class RuntimeError_(SiteError):
    def what(self) -> str:
        return f"Installing the job runtime on {self.site_title} failed: {self.detail}."


def runtime_id(wheelhouse: Path) -> str:
    """The runtime a wheelhouse holds: the workbench's version and its source digest."""
    wheel = next(wheelhouse.glob("aifa_workbench-*.whl"))
    version = wheel.name.split("-")[1]
    return f"{version}-{(wheelhouse / 'SOURCE').read_text().strip()[:12]}"


def stamp_argv(runtime_dir: str) -> list[str]:
    return ["cat", posixpath.join(runtime_dir, "current", STAMP)]


def install_argvs(runtime_dir: str, ident: str, python: str) -> list[list[str]]:
    """The commands that turn uploaded wheels into the runtime `ident`, each an argv."""
    target = posixpath.join(runtime_dir, ident)
    house = posixpath.join(runtime_dir, "wheelhouse")
    script = (f"set -e; {shlex.join([python, '-m', 'venv', '--clear', target])}; "
              f"{shlex.join([target + '/bin/pip', '--isolated', 'install', '--quiet', '--no-index', '--find-links', house, 'aifa-workbench'])}; "
              f"printf '%s\\n' {shlex.quote(ident)} > {shlex.quote(target + '/' + STAMP)}; "
              f"ln -sfn {shlex.quote(ident)} {shlex.quote(runtime_dir + '/current.new')}; "
              f"mv -T {shlex.quote(runtime_dir + '/current.new')} {shlex.quote(runtime_dir + '/current')}")
    return [["mkdir", "-p", house], ["/bin/sh", "-c", script]]


async def installed_runtime(runner, as_user: str, runtime_dir: str) -> str | None:
    """The id of the runtime the site's `current` points at, or None if there is none."""
    result = await runner.run(stamp_argv(runtime_dir), as_user=as_user, timeout=20)
    return result.stdout.strip() if result.ok else None


async def install_runtime(runner, as_user: str, site_title: str, runtime_dir: str, wheelhouse: Path,
                          python: str = "/usr/bin/python3", log=print) -> str:
    """Upload the wheels that are not on the site yet, make the venv, point `current` at it."""
    ident = runtime_id(wheelhouse)
    mkdir, build = install_argvs(runtime_dir, ident, python)
    await _checked(runner, as_user, site_title, mkdir)
    connection = await runner.connection_for(as_user).connection()
    house = posixpath.join(runtime_dir, "wheelhouse")
    async with connection.start_sftp_client() as sftp:
        present = {entry.filename: entry.attrs.size for entry in await sftp.readdir(house)}
        wheels = [w for w in sorted(wheelhouse.glob("*.whl")) if present.get(w.name) != w.stat().st_size]
        log(f"{site_title}: uploading {len(wheels)} of {len(list(wheelhouse.glob('*.whl')))} wheels")
        if wheels:
            await sftp.put([str(w) for w in wheels], house)
    log(f"{site_title}: installing runtime {ident} into {runtime_dir}")
    await _checked(runner, as_user, site_title, build, timeout=900)
    return ident


async def _checked(runner, as_user, site_title, argv, timeout=60):
    result = await runner.run(argv, as_user=as_user, timeout=timeout)
    if not result.ok:
        raise RuntimeError_(site_title, f"{argv[0]} exit {result.returncode}: {bounded(result.stderr, 400)}")
    return result
