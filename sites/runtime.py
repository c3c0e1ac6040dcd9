"""The job's software on a site: the workbench's job runtime (jupyterhub-singleuser, JupyterLab,
the server extension, the walltime guard, ipywidgets, dask-jobqueue, dask-labextension,
jupyter-server-proxy, at the versions pyproject.toml pins), installed into the site's runtime
directory over SSH and stamped with its id, so that the hub can tell whether a site runs the
runtime of this hub's code.

Layout on the site: <runtime>/wheelhouse (the wheels, uploaded), <runtime>/<id>/ (a venv made
with the site's Python, installed from those wheels only), <runtime>/current -> <id>, and
<runtime>/<id>/aifa-workbench-runtime holding the id. A container environment (LUMI's AI Factory
images) gets a runtime of its own made *inside* its image, on top of the image's packages
(`venv --system-site-packages`, as the AI Factory guide says): <runtime>/containers/<slug>/<id>,
with its own `current`; the job binds <runtime> into the container to run it.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
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


# The wheelhouse holds compiled wheels for one interpreter: its Python version and machine, as
# this probe prints them, are written beside the wheels (TARGET) and must be the site's.
INTERPRETER_PROBE = "import platform, sys; print('%d.%d %s' % (*sys.version_info[:2], platform.machine()))"
TARGET = "TARGET"


def this_interpreter() -> str:
    """What INTERPRETER_PROBE prints for the running Python ("3.11 x86_64")."""
    import platform
    import sys

    return "%d.%d %s" % (*sys.version_info[:2], platform.machine())


def wheelhouse_target(wheelhouse: Path) -> str | None:
    """The interpreter the wheelhouse was built for, or None if it does not say (an older one)."""
    path = wheelhouse / TARGET
    return path.read_text().strip() or None if path.exists() else None


def interpreter_mismatch(where: str, found: str, target: str, fix: str) -> str | None:
    """A sentence if the Python `where` ("the site's Python /usr/bin/python3") is not the one the
    wheels were built for, else None."""
    if found.strip() == target:
        return None
    return (
        f"{where} is Python {found.strip() or '(did not answer)'}, but this hub's wheels are for Python {target}; {fix}"
    )


@dataclass(frozen=True)
class ContainerImage:
    """A container environment of the catalogue: its slug, its image, the lines that prepare the
    shell for it (LUMI: module purge, the bindings module)."""

    slug: str
    image: str
    setup: tuple[str, ...] = ()


def container_runtime_dir(runtime_dir: str, slug: str) -> str:
    """Where the runtime made inside the image of container environment `slug` lives."""
    return posixpath.join(runtime_dir, "containers", slug)


def in_image(runtime_dir: str, image: str) -> list[str]:
    """The argv prefix that runs a command inside `image` with the runtime directory bound in:
    `run`, as the notebook's server is started, so that the image's runscript sets up the same
    Python for the runtime's venv as for the server and the Dask workers."""
    return ["singularity", "run", "--bind", runtime_dir, image]


def _venv_script(home: str, ident: str, house: str, venv: list[str], run: list[str]) -> str:
    """Shell lines making the venv `home`/`ident` with `venv`, filling it from the wheelhouse
    (its pip started through `run`), stamping it and pointing `home`/current at it."""
    target = posixpath.join(home, ident)
    pip = [
        *run,
        target + "/bin/pip",
        "--isolated",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        house,
        "aifa-workbench",
    ]
    return (
        f"{shlex.join([*venv, '--clear', target])}; {shlex.join(pip)}; "
        f"printf '%s\\n' {shlex.quote(ident)} > {shlex.quote(target + '/' + STAMP)}; "
        f"ln -sfn {shlex.quote(ident)} {shlex.quote(home + '/current.new')}; "
        f"mv -T {shlex.quote(home + '/current.new')} {shlex.quote(home + '/current')}"
    )


def install_argvs(
    runtime_dir: str, ident: str, python: str, containers: tuple[ContainerImage, ...] = ()
) -> list[list[str]]:
    """The commands that turn uploaded wheels into the runtime `ident`, each an argv: the site's
    own, then one inside each container image (in a login shell: the images need modules)."""
    house = posixpath.join(runtime_dir, "wheelhouse")
    argvs = [
        ["mkdir", "-p", house],
        ["/bin/sh", "-c", "set -e; " + _venv_script(runtime_dir, ident, house, [python, "-m", "venv"], [])],
    ]
    for container in containers:
        home = container_runtime_dir(runtime_dir, container.slug)
        run = in_image(runtime_dir, container.image)
        script = _venv_script(home, ident, house, [*run, "python3", "-m", "venv", "--system-site-packages"], run)
        argvs.append(
            ["/bin/bash", "-lc", "\n".join(["set -e", *container.setup, shlex.join(["mkdir", "-p", home]), script])]
        )
    return argvs


def probe_argvs(runtime_dir: str, python: str, containers: tuple[ContainerImage, ...] = ()) -> list[list[str]]:
    """The commands that print which interpreter each runtime would be built on: the site's
    Python, then each image's python3 (after the image's set-up lines)."""
    argvs = [[python, "-c", INTERPRETER_PROBE]]
    for container in containers:
        probe = shlex.join([*in_image(runtime_dir, container.image), "python3", "-c", INTERPRETER_PROBE])
        argvs.append(["/bin/bash", "-lc", "\n".join(["set -e", *container.setup, probe])])
    return argvs


async def check_interpreters(
    runner,
    as_user: str,
    site_title: str,
    runtime_dir: str,
    python: str,
    containers: tuple[ContainerImage, ...],
    target: str,
) -> None:
    """Refuse, with a sentence, to install wheels built for another Python or machine."""
    probes = probe_argvs(runtime_dir, python, containers)
    wheres = [
        (
            f"the site's Python {python}",
            "set paths.python in the site's catalogue file to a Python of that "
            "version on the site, or build the runtime's wheels with one like the site's",
        )
    ]
    wheres += [
        (
            f"the python3 inside {c.image}",
            "use an image with that Python, or build the runtime's wheels with one like the image's",
        )
        for c in containers
    ]
    for argv, (where, fix) in zip(probes, wheres):
        result = await runner.run(argv, as_user=as_user, timeout=120)
        if not result.ok or not result.stdout.strip():  # no Python there, a bad image, a module that failed
            raise RuntimeError_(
                site_title,
                f"{where} did not answer ({argv[0]} exit {result.returncode}: {bounded(result.stderr, 400)})",
            )
        mismatch = interpreter_mismatch(where, result.stdout.strip().splitlines()[-1], target, fix)
        if mismatch:
            raise RuntimeError_(site_title, mismatch)


async def installed_runtime(runner, as_user: str, runtime_dir: str) -> str | None:
    """The id of the runtime the site's `current` points at, or None if there is none."""
    return (await installed_runtimes(runner, as_user, runtime_dir, ()))[""]


async def installed_runtimes(runner, as_user: str, runtime_dir: str, slugs) -> dict[str, str | None]:
    """The ids of the site's runtime ("") and of the named container environments' runtimes, in
    one command (`runner`: a site's, or job control's `commands`); None where there is none."""
    homes = {"": runtime_dir, **{slug: container_runtime_dir(runtime_dir, slug) for slug in slugs}}
    files = [posixpath.join(home, "current", STAMP) for home in homes.values()]
    script = 'for f; do head -n 1 "$f" 2>/dev/null || echo; done'
    result = await runner.run(["/bin/sh", "-c", script, "sh", *files], as_user=as_user, timeout=20)
    lines = result.stdout.splitlines() if result.ok else []
    lines += [""] * (len(files) - len(lines))
    return {name: (line.strip() or None) for name, line in zip(homes, lines)}


async def install_runtime(
    runner,
    as_user: str,
    site_title: str,
    runtime_dir: str,
    wheelhouse: Path,
    python: str = "/usr/bin/python3",
    log=print,
    containers: tuple[ContainerImage, ...] = (),
) -> str:
    """Upload the wheels that are not on the site yet, make the venvs, point `current` at them."""
    ident = runtime_id(wheelhouse)
    mkdir, build, *in_images = install_argvs(runtime_dir, ident, python, containers)
    await _checked(runner, as_user, site_title, mkdir)
    target = wheelhouse_target(wheelhouse)
    if target:
        await check_interpreters(runner, as_user, site_title, runtime_dir, python, containers, target)
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
    for container, argv in zip(containers, in_images):
        log(f"{site_title}: installing runtime {ident} inside {container.image} ({container.slug})")
        await _checked(runner, as_user, site_title, argv, timeout=900)
    return ident


async def _checked(runner, as_user, site_title, argv, timeout=60):
    result = await runner.run(argv, as_user=as_user, timeout=timeout)
    if not result.ok:
        raise RuntimeError_(site_title, f"{argv[0]} exit {result.returncode}: {bounded(result.stderr, 400)}")
    return result
