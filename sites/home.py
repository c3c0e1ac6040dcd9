"""A user's home on a site, read from the site (their login's $HOME) and tried for writing before
a job is submitted, with the project's directories the site publishes (its shared project folder
and its scratch, for the job's account: a path the site documents, or the variable its login shell
sets, as JSC's $PROJECT_<project>), kept where they exist and the user may write there, never
guessed: sites lay homes out their own way (Lucia's
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
# for each KIND=WHERE argument (the project's folders as the catalogue names them: a directory, or
# $NAME, a variable of the user's login environment), "dir:KIND=WHERE DIR" where DIR is a
# directory the user may write in. The variables are read apart, by a login shell (bash's where
# there is one: JSC's login shell is bash, its profile bash's) given 15 s, whose profile may print
# anything or fail: the values come back on descriptor 3, one line each, and a failure there only
# leaves the job without those folders. Names are checked before they are asked (VARIABLE).
PROBE = r"""cd || exit 0
printf 'home=%s\n' "$HOME"
f="$HOME/.aifa-workbench-write-test.$$"
if err=$( (head -c 65536 /dev/zero > "$f") 2>&1 ); then echo writable; else printf 'unwritable=%s\n' "$err" | head -n 1; fi
rm -f "$f"
names=
for asked in "$@"; do case ${asked#*=} in '$'*) names="$names ${asked#*=\$}" ;; esac; done
values=
if [ -n "$names" ]; then
  login=/bin/sh; command -v bash >/dev/null 2>&1 && login=bash
  values=$(timeout 15 "$login" -l -c 'for n do v=$(printenv "$n") || continue
    case $v in *"
"*) ;; *) printf "%s=%s\n" "$n" "$v" >&3 ;; esac; done' sh $names 3>&1 >/dev/null 2>&1 </dev/null)
fi
for asked in "$@"; do
  where=${asked#*=}
  case $where in
    '$'*) dir=$(printf '%s\n' "$values" | sed -n "s/^${where#?}=//p" | head -n 1) ;;
    *) dir=$where ;;
  esac
  if [ -n "$dir" ] && [ -d "$dir" ] && [ -w "$dir" ]; then printf 'dir:%s %s\n' "$asked" "$dir"; fi
done
exit 0
"""

# the project's directories a job may use, by kind: the project's shared folder, its scratch
STORAGE_KINDS = ("project", "scratch")

# A home the batch script and the job's paths can carry as they are.
HOME_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]{1,1023}$")
# a project's folder the batch script can carry: plain segments, none empty, "." or ".."; nothing
# a shell would read twice (spawners.script refuses anything else)
PLAIN_DIR = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._+@-]+)+")
# a variable of the login shell's that names a project's folder (JSC: $PROJECT_<project>)
VARIABLE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]{0,127}$")
FULL = ("Disk quota exceeded", "No space left on device")


@dataclass(frozen=True)
class HomeReport:
    home: str | None  # None: the site gave none the workbench can use
    problem: str = ""  # "", "full", "unwritable" or "no home"
    detail: str = ""
    storage: tuple[tuple[str, str], ...] = ()  # (kind, directory) the site has and the user may write


def probe_argv(storage: dict[str, str]) -> list[str]:
    """The probe's command line, asking about `storage` ({kind: directory or $VARIABLE}) too: the
    catalogue's paths (validated there) with the job's account (validated) filled in; a variable
    is the login environment's (/etc/profile and the user's own)."""
    asked = [f"{kind}={where}" for kind, where in storage.items() if kind in STORAGE_KINDS and _askable(where)]
    return ["/bin/sh", "-c", PROBE, "sh", *asked]


def _askable(where: str) -> bool:
    return bool(VARIABLE.match(where) or plain_dir(where))


def plain_dir(path: str) -> bool:
    """A project's folder as the batch script takes it (PLAIN_DIR), at most 1024 characters."""
    return len(path) <= 1024 and bool(PLAIN_DIR.fullmatch(path))


def _plain_path(path: str) -> bool:
    return bool(HOME_PATH.match(path)) and "/../" not in path + "/" and "/./" not in path + "/"


def parse_probe(stdout: str, asked: dict[str, str] | None = None) -> HomeReport:
    report = _parse_home(stdout)
    return HomeReport(report.home, report.problem, report.detail, _storage_found(stdout, asked or {}))


def _storage_found(stdout: str, asked: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(kind, directory) for each folder asked about that the probe found: a path as asked, a
    variable's value where the batch script can carry it. The user's shell startup files may print
    anything before the probe does, so the last answer to each question counts (what they could
    point at is the user's own to write anyway)."""
    answers: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("dir:"):
            question, _, directory = line.removeprefix("dir:").partition(" ")
            answers[question] = directory
    storage = []
    for kind, where in asked.items():
        directory = answers.get(f"{kind}={where}")
        if directory and _askable(where) and plain_dir(directory) and (directory == where or VARIABLE.match(where)):
            storage.append((kind, directory))
    return tuple(storage)


def _parse_home(stdout: str) -> HomeReport:
    lines = stdout.splitlines()
    homes = [line[len("home=") :] for line in lines if line.startswith("home=")]
    if not homes:
        return HomeReport(None, "no home", "the login shell could not enter $HOME")
    home = homes[-1]  # the probe's own comes after anything the user's shell startup files print
    if not _plain_path(home):
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
