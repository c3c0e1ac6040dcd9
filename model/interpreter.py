"""A Python interpreter as a site reports it (version, ABI, machine, C library), and which binary
wheels run on it: what the job runtime of one environment is built for.

The facts come from PROBE, run by the environment's own `python3` (after its modules, inside its
image); nothing is assumed from the site's name or the hub's own Python."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Run on the site as `python3 -c PROBE`: one JSON line. Python >= 3.6 (a site's oldest), no imports
# beyond the standard library's.
PROBE = (
    "import json, os, platform, sys, sysconfig; "
    "libc = (os.confstr('CS_GNU_LIBC_VERSION') or '').split(); "
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
    "'abi': 'cp%d%d%s' % (sys.version_info[0], sys.version_info[1], 't' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''), "
    "'implementation': sys.implementation.name, 'machine': platform.machine(), "
    "'glibc': libc[1] if len(libc) == 2 and libc[0] == 'glibc' else ''}))"
)

_VERSION = re.compile(r"^3\.\d{1,2}$")
_ABI = re.compile(r"^cp3\d{1,2}$")  # not free-threaded (cp313t): its venvs and wheels differ
_MACHINE = re.compile(r"^[a-z0-9_]{1,20}$")
_GLIBC = re.compile(r"^2\.\d{1,3}$")
# the oldest manylinux a wheel may claim (manylinux2014)
OLDEST_GLIBC_MINOR = 17


class InterpreterError(ValueError):
    """What a probe printed is not an interpreter this workbench can build a runtime for."""


@dataclass(frozen=True)
class Interpreter:
    version: str  # "3.13"
    abi: str  # "cp313"
    machine: str  # "aarch64", "x86_64"
    glibc: str  # "2.41"

    @property
    def key(self) -> str:
        """A name for the wheels that run on it (a folder name): "cp313-aarch64-glibc2.41"."""
        return f"{self.abi}-{self.machine}-glibc{self.glibc}"

    def describe(self) -> str:
        return f"Python {self.version} on {self.machine} (glibc {self.glibc})"

    def platforms(self) -> list[str]:
        """pip's --platform values for binary wheels that run here: every manylinux from this
        C library's down to manylinux2014."""
        minor = int(self.glibc.split(".")[1])
        return [f"manylinux_2_{m}_{self.machine}" for m in range(minor, OLDEST_GLIBC_MINOR - 1, -1)] + [
            f"manylinux2014_{self.machine}"
        ]

    def runs_wheels_built_for(self, other: "Interpreter") -> bool:
        """Whether wheels chosen for `other` run here: same Python, ABI and machine, and a C
        library at least as new."""
        return (self.version, self.abi, self.machine) == (other.version, other.abi, other.machine) and _minor(
            self.glibc
        ) >= _minor(other.glibc)

    def pip_download_args(self) -> list[str]:
        """pip download's options that choose binary wheels for this interpreter."""
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.version]
        args += ["--abi", self.abi]
        for platform in self.platforms():
            args += ["--platform", platform]
        return args


def _minor(glibc: str) -> int:
    return int(glibc.split(".")[1])


def parse_probe(output: str) -> Interpreter:
    """The interpreter PROBE's last line describes, or InterpreterError saying what is wrong."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    try:
        facts = json.loads(lines[-1]) if lines else None
    except ValueError:
        facts = None
    if not isinstance(facts, dict):
        raise InterpreterError(f"its python3 printed no interpreter facts ({_bounded(output)!r})")
    if facts.get("implementation") != "cpython":
        raise InterpreterError(f"its python3 is {_bounded(str(facts.get('implementation')))}, not CPython")
    fields = {name: str(facts.get(name, "")) for name in ("version", "abi", "machine", "glibc")}
    if not fields["glibc"]:
        raise InterpreterError("its python3 does not run on glibc (no manylinux wheel runs there)")
    for name, pattern in (("version", _VERSION), ("abi", _ABI), ("machine", _MACHINE), ("glibc", _GLIBC)):
        if not pattern.fullmatch(fields[name]):
            raise InterpreterError(f"its python3 reported {name} {_bounded(fields[name])!r}")
    return Interpreter(**fields)


def _bounded(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
