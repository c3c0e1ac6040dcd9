"""The job's software on a site: the workbench's job runtime (jupyterhub-singleuser, JupyterLab,
the server extension, the walltime guard, ipywidgets, dask-jobqueue, dask-labextension,
jupyter-server-proxy, at the versions pyproject.toml pins), one per environment of the site's
catalogue, each made by that environment's own Python (after its modules, inside its image) from
wheels chosen for exactly that interpreter, installed over SSH and stamped with its id.

Layout on the site: <runtime>/wheels/<interpreter key>/ (the wheels, uploaded), and per
environment <runtime>/envs/<slug>/:
- base-<wheel set>/: a venv made by the environment's python3 holding every dependency, made once
  per set of wheels (a new commit of the workbench does not remake it: on an emulated or slow
  site that is most of the time an install takes);
- <id>/: a venv made by the same python3 holding the workbench's own package, which reaches the
  base through a .pth, with the base's commands and Jupyter data beside its own;
- current -> <id>, and <id>/aifa-workbench-runtime holding "<id> <interpreter key>".
A container environment's venvs are made inside its image on top of the image's packages
(`venv --system-site-packages`, as the AI Factory guide says); the job binds <runtime> into the
container to run it.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import time
from pathlib import Path

from aifa_workbench.model.interpreter import PROBE, Interpreter, InterpreterError, parse_probe

from .commands import bounded
from .errors import SiteError

STAMP = "aifa-workbench-runtime"
BASE_STAMP = "aifa-workbench-base"
OWN_WHEELS = ("aifa_workbench-", "pip-")  # the layer's own, and pip (run from its wheel)


class RuntimeError_(SiteError):
    def what(self) -> str:
        return f"Installing the job runtime on {self.site_title} failed: {self.detail}."


def runtime_id(wheelhouse: Path) -> str:
    """The runtime a wheelhouse holds: the workbench's version and its source digest."""
    wheel = next(wheelhouse.glob("aifa_workbench-*.whl"))
    version = wheel.name.split("-")[1]
    return f"{version}-{(wheelhouse / 'SOURCE').read_text().strip()[:12]}"


def env_runtime_dir(runtime_dir: str, slug: str) -> str:
    """Where the runtimes of environment `slug` live (`current` among them)."""
    return posixpath.join(runtime_dir, "envs", slug)


def wheels_dir(runtime_dir: str, interpreter: Interpreter) -> str:
    return posixpath.join(runtime_dir, "wheels", interpreter.key)


def pins(wheel_names) -> list[str]:
    """`name==version` of every dependency wheel (not the workbench's own, not pip): the base
    installs exactly these, whatever else the site's wheel folder holds."""
    found = []
    for name in sorted(wheel_names):
        if name.endswith(".whl") and not name.startswith(OWN_WHEELS):
            distribution, version = name.split("-")[:2]
            found.append(f"{distribution}=={version}")
    return found


def wheel_set(wheel_names, interpreter: Interpreter, image: str | None = None) -> str:
    """The base a set of wheels makes for an interpreter (inside an image): a digest of all three."""
    text = "\n".join([*pins(wheel_names), interpreter.key, image or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def own_wheels_dir(runtime_dir: str, ident: str) -> str:
    """Where the workbench's own wheel of runtime `ident` is uploaded (its name does not change
    between commits; its folder does)."""
    return posixpath.join(runtime_dir, "wheels", "own", ident)


def in_image(runtime_dir: str, image: str) -> list[str]:
    """The argv prefix that runs a command inside `image` with the runtime directory bound in:
    `run`, as the notebook's server is started, so that the image's runscript sets up the same
    Python for the runtime's venv as for the server and the Dask workers."""
    return ["singularity", "run", "--bind", runtime_dir, image]


def _in_environment(environment, lines: list[str]) -> list[str]:
    """An argv running shell `lines` in a login shell (the site's `module` comes with its profile)
    after the environment's setup lines."""
    return ["/bin/bash", "-lc", "\n".join(["set -e", *environment.setup, *lines])]


def _prefix(environment, runtime_dir: str) -> list[str]:
    return in_image(runtime_dir, environment.container) if environment.container else []


def probe_argv(runtime_dir: str, environment) -> list[str]:
    """The command that prints the facts of the Python an environment's job would run."""
    python = shlex.join([*_prefix(environment, runtime_dir), "python3", "-c", PROBE])
    return _in_environment(environment, [python])


def install_argv(
    runtime_dir: str, environment, ident: str, interpreter: Interpreter, base: str, base_pins, own_wheel: str
) -> list[str]:
    """The command that makes runtime `ident` of `environment` (nothing if its `current` already
    is that runtime): its base `base` first unless the site has it (exactly `base_pins`, from the
    interpreter's uploaded wheels), then a layer holding `own_wheel`; it stamps the layer, points
    `current` at it and prints the size of both in KiB. pip runs from its own wheel: a Python of
    the site need not bring pip or ensurepip."""
    home = env_runtime_dir(runtime_dir, environment.slug)
    target, base_dir = posixpath.join(home, ident), posixpath.join(home, f"base-{base}")
    house = wheels_dir(runtime_dir, interpreter)
    run = _prefix(environment, runtime_dir)
    q = shlex.quote

    def venv(path: str) -> str:
        site_packages = ["--system-site-packages"] if environment.container else []
        return shlex.join([*run, "python3", "-m", "venv", "--clear", "--without-pip", *site_packages, path])

    def pip(venv_dir: str, *args: str) -> str:
        return f'{shlex.join([*run, venv_dir + "/bin/python"])} "$pip" --isolated {shlex.join(args)}'

    install = ("install", "--quiet", "--no-index", "--find-links", house)
    packages = f"lib/python{interpreter.version}/site-packages"
    stamp = f"{ident} {interpreter.key}"
    return _in_environment(
        environment,
        [
            f"mkdir -p {q(home)}",
            f'if [ "$(cat {q(home + "/current/" + STAMP)} 2>/dev/null)" = {q(stamp)} ]; then du -skc {q(target)} | tail -n 1 | cut -f1; exit 0; fi',
            f"pip=$(ls -d {q(house)}/pip-*.whl | tail -n 1)/pip",
            # made in place (its commands name its path), complete once stamped
            f"if [ ! -e {q(base_dir + '/' + BASE_STAMP)} ]; then",
            f"  {venv(base_dir)}",
            f"  {pip(base_dir, *install, *base_pins)}",
            f"  printf '%s\\n' {q(base)} > {q(base_dir + '/' + BASE_STAMP)}",
            "fi",
            venv(target),
            # the base's Jupyter data and configuration (labextensions, server extensions enabled)
            f"for d in share etc; do [ ! -d {q(base_dir)}/$d ] || cp -rsn {q(base_dir)}/$d {q(target)}/; done",
            f"printf 'import site; site.addsitedir(%s)\\n' {q(repr(posixpath.join(base_dir, packages)))} "
            f"> {q(posixpath.join(target, packages, 'aifa-workbench-base.pth'))}",
            pip(target, "install", "--quiet", "--no-index", "--no-deps", own_wheel),
            # the base's commands (jupyterhub-singleuser, jupyter-lab, dask, ...), run by this venv's Python
            f"for f in {q(base_dir)}/bin/*; do n=${{f##*/}}; [ -e {q(target)}/bin/\"$n\" ] && continue; "
            f"head -n 1 \"$f\" | grep -qxF {q('#!' + base_dir + '/bin/python')} || continue; "
            f"{{ printf '#!%s\\n' {q(target + '/bin/python')}; tail -n +2 \"$f\"; }} > {q(target)}/bin/\"$n\"; "
            f"chmod 0755 {q(target)}/bin/\"$n\"; done",
            f"[ -x {q(target + '/bin/jupyterhub-singleuser')} ] || {{ echo 'no jupyterhub-singleuser in the runtime' >&2; exit 1; }}",
            f"printf '%s\\n' {q(stamp)} > {q(target + '/' + STAMP)}",
            f"ln -sfn {q(ident)} {q(home + '/current.new')}",
            f"mv -T {q(home + '/current.new')} {q(home + '/current')}",
            f"du -skc {q(base_dir)} {q(target)} | tail -n 1 | cut -f1",
        ],
    )


async def interpreter_of(runner, as_user: str, site_title: str, runtime_dir: str, environment) -> Interpreter:
    """The Python of `environment` on the site, as it reports itself."""
    result = await runner.run(probe_argv(runtime_dir, environment), as_user=as_user, timeout=300)
    where = f"the environment {environment.slug}"
    if not result.ok:  # no python3 after its modules, a module that failed, a bad image
        raise RuntimeError_(
            site_title, f"{where} has no Python that answered (exit {result.returncode}: {bounded(result.stderr, 400)})"
        )
    try:
        return parse_probe(result.stdout)
    except InterpreterError as e:
        raise RuntimeError_(site_title, f"{where}: {e}") from None


async def installed_runtimes(runner, as_user: str, runtime_dir: str, slugs) -> dict[str, str | None]:
    """The runtime id each named environment's `current` holds, in one command (`runner`: a
    site's, or job control's `commands`); None where there is none."""
    files = [posixpath.join(env_runtime_dir(runtime_dir, slug), "current", STAMP) for slug in slugs]
    script = 'for f; do head -n 1 "$f" 2>/dev/null || echo; done'
    result = await runner.run(["/bin/sh", "-c", script, "sh", *files], as_user=as_user, timeout=20)
    lines = result.stdout.splitlines() if result.ok else []
    lines += [""] * (len(files) - len(lines))
    return {slug: ((line.split() or [None])[0]) for slug, line in zip(slugs, lines)}


async def upload_wheels(
    runner, as_user: str, site_title: str, house: str, wheelhouse: Path, log, wheels: list[Path] | None = None
) -> None:
    """The wheels of `wheelhouse` (or `wheels`) that the site's `house` lacks (by name and size)."""
    await _checked(runner, as_user, site_title, ["mkdir", "-p", house])
    connection = await runner.connection_for(as_user).connection()
    async with connection.start_sftp_client() as sftp:
        present = {entry.filename: entry.attrs.size for entry in await sftp.readdir(house)}
        wheels = sorted(wheelhouse.glob("*.whl")) if wheels is None else wheels
        missing = [w for w in wheels if present.get(w.name) != w.stat().st_size]
        log(f"{site_title}: uploading {len(missing)} of {len(wheels)} wheels to {house}")
        if missing:
            await sftp.put([str(w) for w in missing], house)


async def install_environment(
    runner, as_user: str, site_title: str, runtime_dir: str, environment, ident: str, interpreter, wheelhouse, log
) -> tuple[int, float]:
    """Runtime `ident` of one environment from `wheelhouse` (chosen for `interpreter`): its size in
    KiB and the seconds the install took on the site."""
    await upload_wheels(runner, as_user, site_title, wheels_dir(runtime_dir, interpreter), wheelhouse, log)
    own = next(wheelhouse.glob("aifa_workbench-*.whl"))
    await upload_wheels(runner, as_user, site_title, own_wheels_dir(runtime_dir, ident), wheelhouse, log, [own])
    names = [w.name for w in wheelhouse.glob("*.whl")]
    base = wheel_set(names, interpreter, environment.container)
    argv = install_argv(
        runtime_dir,
        environment,
        ident,
        interpreter,
        base,
        pins(names),
        posixpath.join(own_wheels_dir(runtime_dir, ident), own.name),
    )
    log(f"{site_title}: installing runtime {ident} for {environment.slug} ({interpreter.describe()})")
    started = time.monotonic()
    result = await _checked(runner, as_user, site_title, argv, 3600)
    size = result.stdout.strip().splitlines()[-1:] or ["0"]
    return int(size[0]) if size[0].isdigit() else 0, time.monotonic() - started


async def _checked(runner, as_user, site_title, argv, timeout=60):
    result = await runner.run(argv, as_user=as_user, timeout=timeout)
    if not result.ok:
        raise RuntimeError_(site_title, f"{argv[0]} exit {result.returncode}: {bounded(result.stderr, 400)}")
    return result
