"""The wheels of the job runtime for one interpreter of a site: the hub's own wheelhouse where its
wheels run there (same Python, ABI and machine, a C library at least as new), otherwise binary
wheels chosen for that interpreter by `pip download` from the package index, kept per runtime id
and interpreter under the hub's state directory."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from aifa_workbench.model.interpreter import Interpreter, InterpreterError, parse_probe
from aifa_workbench.sites.commands import bounded
from aifa_workbench.sites.runtime import runtime_id

COMPLETE = "COMPLETE"


class WheelsUnavailable(Exception):
    """No set of binary wheels for an interpreter; the message is a sentence for the admin."""


def hub_interpreter(wheelhouse: Path) -> Interpreter | None:
    """The interpreter the hub's wheelhouse was chosen for (its TARGET file), or None if unsaid."""
    try:
        return parse_probe((wheelhouse / "TARGET").read_text())
    except (OSError, InterpreterError):
        return None


def download_argv(interpreter: Interpreter, wheelhouse: Path, dest: Path) -> list[str]:
    """pip download of the workbench (from the hub's wheelhouse) and everything it needs, as binary
    wheels for `interpreter`, and pip itself (the site's install runs pip from its wheel)."""
    version = next(wheelhouse.glob("aifa_workbench-*.whl")).name.split("-")[1]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        *interpreter.pip_download_args(),
        "--find-links",
        str(wheelhouse),
        "--dest",
        str(dest),
        f"aifa-workbench=={version}",
        "pip",
    ]


async def wheelhouse_for(interpreter: Interpreter, wheelhouse: Path, cache: Path, log=print) -> Path:
    """A folder of wheels that make the runtime on `interpreter`."""
    hub = hub_interpreter(wheelhouse)
    if hub is not None and interpreter.runs_wheels_built_for(hub):
        return wheelhouse
    house = cache / runtime_id(wheelhouse) / interpreter.key
    if (house / COMPLETE).exists():
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"choosing wheels for {interpreter.describe()} from the package index")
    process = await asyncio.create_subprocess_exec(
        *download_argv(interpreter, wheelhouse, partial),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise WheelsUnavailable(
            f"no binary wheels of the workbench's packages for {interpreter.describe()}: "
            f"{bounded(err.decode(errors='replace').strip(), 400)}"
        )
    (partial / COMPLETE).write_text(interpreter.key + "\n")
    shutil.rmtree(house, ignore_errors=True)
    partial.rename(house)
    return house
