"""A user's home on a site, read from the site (their login's $HOME) and tried for writing before
a job is submitted, with the project's directories the site publishes (its shared project folder
and its scratch: the catalogue's paths for the job's account), kept where they exist and the user
may write there, never guessed: sites lay homes out their own way (Lucia's
/gpfs/home/acad/<institution-department>/<user>, which no pattern of the username gives), and a
full or read-only home stops JupyterLab with nothing the user can read (the sites' own Jupyter
services test this before starting: Jupyter-JSC reports "Disk quota exceeded in $HOME")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .commands import bounded
from .errors import SiteError

# Run by the user's shell on the login node (homes are shared with the compute nodes): where the
# home is, and whether 64 KiB can be written there (a quota counts blocks, not only files); then,
# for each KIND=DIR argument (the project's folders as the catalogue names them), that line again
# where DIR is a directory the user may write in.
PROBE = r"""cd || exit 0
printf 'home=%s\n' "$HOME"
f="$HOME/.aifa-workbench-write-test.$$"
if err=$( (head -c 65536 /dev/zero > "$f") 2>&1 ); then echo writable; else printf 'unwritable=%s\n' "$err" | head -n 1; fi
rm -f "$f"
for asked in "$@"; do
  if [ -d "${asked#*=}" ] && [ -w "${asked#*=}" ]; then printf 'dir:%s\n' "$asked"; fi
done
exit 0
"""

# the project's directories a job may use, by kind: the project's shared folder, its scratch
STORAGE_KINDS = ("project", "scratch")

# A home the batch script and the job's paths can carry as they are.
HOME_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]{1,1023}$")
FULL = ("Disk quota exceeded", "No space left on device")


@dataclass(frozen=True)
class HomeReport:
    home: str | None  # None: the site gave none the workbench can use
    problem: str = ""  # "", "full", "unwritable" or "no home"
    detail: str = ""
    storage: tuple[tuple[str, str], ...] = ()  # (kind, directory) the site has and the user may write


def probe_argv(storage: dict[str, str]) -> list[str]:
    """The probe's command line, asking about `storage` ({kind: directory}) too; the directories
    are the catalogue's paths (validated there) with the job's account (validated) filled in."""
    asked = [f"{kind}={path}" for kind, path in storage.items() if kind in STORAGE_KINDS and HOME_PATH.match(path)]
    return ["/bin/sh", "-c", PROBE, "sh", *asked]


def parse_probe(stdout: str, asked: dict[str, str] | None = None) -> HomeReport:
    report = _parse_home(stdout)
    # only the directories asked about, as asked: the user's shell startup files may print anything
    found = {line[len("dir:") :] for line in stdout.splitlines() if line.startswith("dir:")}
    storage = tuple(
        (kind, path) for kind, path in (asked or {}).items() if HOME_PATH.match(path) and f"{kind}={path}" in found
    )
    return HomeReport(report.home, report.problem, report.detail, storage)


def _parse_home(stdout: str) -> HomeReport:
    lines = stdout.splitlines()
    homes = [line[len("home=") :] for line in lines if line.startswith("home=")]
    if not homes:
        return HomeReport(None, "no home", "the login shell could not enter $HOME")
    home = homes[0]
    if not HOME_PATH.match(home) or "/../" in home + "/" or "/./" in home + "/":
        return HomeReport(None, "no home", f"$HOME is {bounded(home, 120)!r}, not a plain absolute path")
    if "writable" in lines:
        return HomeReport(home)
    failures = [line[len("unwritable=") :] for line in lines if line.startswith("unwritable=")]
    detail = bounded(failures[0] if failures else "the write test said nothing", 200)
    return HomeReport(home, "full" if any(f in detail for f in FULL) else "unwritable", detail)


class HomeUnusable(SiteError):
    """The user's home on the site is missing, full or not writable; `advice` holds the report."""

    def __init__(self, site_title: str, report: HomeReport):
        self.report = report
        super().__init__(site_title, report.detail, action="to start your server")

    def what(self) -> str:
        home, site = self.report.home, self.site_title
        if self.report.problem == "full":
            return (
                f"Your home on {site} ({home}) is full: the site's quota is reached ({self.detail}), so "
                "JupyterLab could not start there. Delete or move files out of it, then start again."
            )
        if self.report.problem == "unwritable":
            return (
                f"Your home on {site} ({home}) cannot be written ({self.detail}), so JupyterLab could not "
                f"start there. Ask {site}'s support to restore your access to it, then start again."
            )
        return (
            f"{site} gave no home the workbench can use for your account ({self.detail}). "
            "Tell your workbench administrator."
        )
