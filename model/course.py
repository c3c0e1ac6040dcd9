"""Courses (workshops): what a trainer asks for, checked, and what follows from it. Pure.

A course runs on one site and partition, in one time window, for at most `size` participants,
each getting one locked session shape (GPUs, hours). On the local cluster the hub makes its Slurm
side, named after its id: the account `course-<id>` (a child of the trainer's project, with the
course's budget and one job per participant) and the reservation `aifa-<id>`. On a remote site
(LUMI, JUPITER, Lucia) the site makes the reservation and the course names it; participants use
their own site accounts, charged to the trainer's project there. Participants join with a short
code during the window; the hub group `course-<id>` holds them, `course-<id>-instructors` its
instructors.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

from .cost import estimate_cost
from .site import Site
from .request import resources_for

COURSE_ID = re.compile(r"^[a-z][a-z0-9-]{2,23}$")
SITE_RESERVATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud in a room
CODE_LENGTH = 8
MAX_WINDOW_HOURS = 12
MAX_SIZE = 200
# The course form's labels, in the form and in the sentences refusing a value of it.
LABELS = {
    "id": "Short name",
    "title": "Title",
    "site": "Site",
    "partition": "Partition",
    "gpus": "GPUs each",
    "hours": "Hours per session",
    "starts_at": "Starts",
    "ends_at": "Ends",
    "size": "Participants",
    "project": "Project that pays",
    "budget": "Budget",
    "materials_repo": "Materials (git repository)",
    "materials_branch": "Branch",
    "instructors": "Instructors",
    "idle_minutes": "Stop idle sessions after",
    "reservation": "Site reservation",
}


class CourseError(ValueError):
    def __init__(self, field_name: str, sentence: str):
        super().__init__(sentence)
        self.field = field_name


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    site: str
    partition: str
    gpus: int
    hours: float
    starts_at: float  # epoch seconds
    ends_at: float
    size: int
    project: str  # the trainer's Slurm account that pays (the course account's parent)
    budget: float  # in the site's unit (catalogue's cost), for the whole course
    owner: str  # hub user who made it
    code: str
    instructors: tuple[str, ...] = ()
    materials_repo: str = ""
    materials_branch: str = ""
    idle_minutes: int = 0  # 0: the hub's idle culler's timeout
    state: str = "scheduled"  # scheduled -> ending -> ended
    participants: Mapping[str, str] = field(default_factory=dict)  # hub user -> account used on the site
    # On a remote site the site makes the reservation (and its projects pay): the course names it.
    site_reservation: str = ""

    @property
    def remote(self) -> bool:
        return bool(self.site_reservation)

    @property
    def account(self) -> str:
        return self.project if self.remote else f"course-{self.id}"

    @property
    def reservation(self) -> str:
        return self.site_reservation or f"aifa-{self.id}"

    @property
    def group(self) -> str:
        return f"course-{self.id}"

    @property
    def instructor_group(self) -> str:
        return f"course-{self.id}-instructors"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["instructors"], data["participants"] = list(self.instructors), dict(self.participants)
        return data


def course_from_dict(data: Mapping) -> Course:
    """A course as kept in the hub's state; keys of another version are left out, not fatal."""
    data = {key: value for key, value in data.items() if key in Course.__dataclass_fields__}
    data["instructors"] = tuple(data.get("instructors", ()))
    data["participants"] = dict(data.get("participants", {}))
    return Course(**data)


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normal_code(text) -> str:
    """What a participant typed, as compared: case, spaces and dashes do not matter."""
    if not isinstance(text, str):
        return ""
    return re.sub(r"[\s-]", "", text[:40]).upper()


def shown_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


SESSION_SERVER_PREFIX = "course-"


def session_server(course_id: str) -> str:
    """The named server a participant's session of the course runs as: addressable on its own, so
    that instructors' scopes name it and none of the participant's own servers."""
    return f"{SESSION_SERVER_PREFIX}{course_id}"


def course_of_server(server_name: str) -> str | None:
    """The course id a server's name says it is a session of, or None."""
    if server_name.startswith(SESSION_SERVER_PREFIX) and len(server_name) > len(SESSION_SERVER_PREFIX):
        return server_name[len(SESSION_SERVER_PREFIX) :]
    return None


def instructor_role(course: Course) -> dict:
    """A JupyterHub role: list the course's participants, and see, open and stop each one's course
    session, the named server `course-<id>` (never start one: that would choose options for them),
    and no other server of theirs (their own servers on their own projects), nor anyone else's.
    Made again at each join."""
    only = f"!group={course.group}"
    sessions = [
        f"{scope}!server={person}/{session_server(course.id)}"
        for person in sorted(course.participants)
        for scope in ("read:servers", "delete:servers", "access:servers")
    ]
    return {
        "name": f"{course.group}-instructor",
        "description": f"Instructors of course {course.id}",
        "scopes": [
            "admin-ui",
            f"list:users{only}",
            f"read:users{only}",
            f"read:groups{only}",
            f"list:groups{only}",
            *sessions,
        ],
        "groups": [course.instructor_group],
    }


def session_options(course: Course) -> dict:
    """The locked profile: what every participant's server asks Slurm for."""
    return {
        "site": course.site,
        "partition": course.partition,
        "gpus": course.gpus,
        "hours": course.hours,
        "account": course.account,
        "reservation": course.reservation,
    }


def session_minutes(course: Course) -> int:
    """The longest job of the course's account (MaxWall): one session."""
    return max(15, math.ceil(course.hours * 60))


def budget_minutes(course: Course, per_unit_hour: float) -> int:
    """The course account's GrpTRESMins on billing: its budget in billing-minutes."""
    return max(1, math.ceil(course.budget * per_unit_hour * 60))


def session_resources(course: Course, site: Site) -> tuple[int, int, int]:
    """(GPUs, cores, GB) of one session, as the request rules give them for the locked profile."""
    part = site.partitions[course.partition]
    return resources_for({"gpus": course.gpus} if part.has_gpus and not part.whole_node else {}, site, part)


def session_cost(course: Course, site: Site) -> float:
    gpus, cpus, memory_gb = session_resources(course, site)
    return estimate_cost(site.partitions[course.partition], gpus, cpus, memory_gb, course.hours)


def reservation_cores(course: Course, site: Site) -> int:
    """Cores the reservation holds: one session's cores for each participant, at most the node's."""
    _, cpus, _ = session_resources(course, site)
    return max(1, min(site.partitions[course.partition].cores_per_node, cpus * course.size))


def join_refusal(course: Course | None, user: str, now: float) -> str | None:
    """Why `user` may not join (a sentence), or None."""
    if course is None:
        return "No course has this code. Check it with your trainer (8 letters and digits, like K7QM-3XPA)."
    if course.state != "scheduled" or now >= course.ends_at:
        return f"The course \u201c{course.title}\u201d has ended, so it can no longer be joined."
    if now < course.starts_at - 3600:
        return (
            f"The course \u201c{course.title}\u201d opens an hour before it starts; come back then with the same code."
        )
    if user not in course.participants and len(course.participants) >= course.size:
        return (
            f"The course \u201c{course.title}\u201d is full ({course.size} participants). Ask your trainer for a place."
        )
    return None


def spawn_refusal(course: Course, now: float, last_start_minutes: int = 15) -> str | None:
    if now < course.starts_at:
        return (
            f"The course \u201c{course.title}\u201d has not started yet; its sessions can start from its start time on."
        )
    if course.state != "scheduled" or now >= course.ends_at:
        return f"The course \u201c{course.title}\u201d has ended; its sessions can no longer start."
    if course.ends_at - now < last_start_minutes * 60:
        return (
            f"The course \u201c{course.title}\u201d ends in less than {last_start_minutes} minutes, so no "
            "new session starts now."
        )
    return None


def session_fits(course: Course, now: float) -> float:
    """Hours a session started now may run: the course's hours, cut at the window's end."""
    return max(0.25, min(course.hours, math.floor((course.ends_at - now) / 900) / 4))


def _text(data: Mapping, key: str, limit: int, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise CourseError(key, f"{LABELS[key]}: write some text (at most {limit} characters).")
    value = value.strip()
    if len(value) > limit or any(ord(ch) < 32 for ch in value):
        raise CourseError(key, f"{LABELS[key]}: at most {limit} characters on one line.")
    return value


def _number(data: Mapping, key: str, low: float, high: float, whole: bool = True) -> float:
    value = data.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (whole and value != int(value)) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise CourseError(key, f"{LABELS[key]}: {kind} from {low:g} to {high:g}.")
    return int(value) if whole else float(value)


def _materials(data: Mapping) -> tuple[str, str]:
    repo = _text(data, "materials_repo", 300, required=False)
    branch = _text(data, "materials_branch", 100, required=False)
    if repo and not re.fullmatch(r"(https://|file:///)[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+", repo):
        raise CourseError(
            "materials_repo",
            f"{LABELS['materials_repo']}: an https:// address of a git repository (or file:/// on this machine).",
        )
    if branch and not re.fullmatch(r"[A-Za-z0-9._/-]{1,100}", branch) or branch.startswith("-"):
        raise CourseError("materials_branch", f"{LABELS['materials_branch']}: letters, digits, . _ / - only.")
    return repo, branch


def course_from_request(
    data, owner: str, projects, sites: Mapping[str, Site], known_users, now: float, min_idle_minutes: int = 15
) -> Course:
    """A trainer's request (the course page's JSON) -> a Course, or CourseError naming the field.
    `projects`: the trainer's accounts on each site; `known_users`: names of the hub's users."""
    if not isinstance(data, Mapping):
        raise CourseError("id", "The course must be a JSON object.")
    ident = data.get("id")
    if not isinstance(ident, str) or not COURSE_ID.fullmatch(ident) or ident.endswith("-instructors"):
        raise CourseError(
            "id",
            f"{LABELS['id']}: 3 to 24 lowercase letters, digits or dashes, "
            "starting with a letter, not ending in -instructors (it names the course's Slurm account).",
        )
    title = _text(data, "title", 80)
    site = sites.get(data.get("site")) if isinstance(data.get("site"), str) else None
    if site is None:
        raise CourseError("site", f"{LABELS['site']}: one of {', '.join(sites)}.")
    site_reservation = _site_reservation(data, site)
    part = site.partitions.get(data.get("partition")) if isinstance(data.get("partition"), str) else None
    if part is None:
        raise CourseError("partition", f"{LABELS['partition']}: one of {', '.join(site.partitions)}.")
    if data.get("gpus") in (None, ""):
        data = {**data, "gpus": 1 if part.has_gpus else 0}
    gpus = _number(data, "gpus", 1 if part.has_gpus else 0, part.gpus_per_node if part.has_gpus else 0)
    if part.whole_node:
        gpus = part.gpus_per_node
    hours = _number(data, "hours", 0.25, part.max_hours, whole=False)
    if hours * 4 != int(hours * 4):
        raise CourseError("hours", f"{LABELS['hours']}: in quarter hours (0.25, 0.5, 1.75 …).")
    for key in ("starts_at", "ends_at"):
        value = data.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise CourseError(key, f"{LABELS[key]}: choose a date and a time.")
    starts, ends = float(data["starts_at"]), float(data["ends_at"])
    if not now - 86400 <= starts <= now + 366 * 86400:
        raise CourseError("starts_at", f"{LABELS['starts_at']}: from yesterday to a year from now.")
    if not 0 < ends - starts <= MAX_WINDOW_HOURS * 3600 or ends <= now:
        raise CourseError(
            "ends_at",
            f"{LABELS['ends_at']}: after the start, in the future, and at most {MAX_WINDOW_HOURS} hours after it.",
        )
    project = data.get("project")
    if project not in tuple(projects.get(site.name, ())):
        raise CourseError(
            "project",
            f"{LABELS['project']}: one of your projects on {site.title}: "
            f"{', '.join(projects.get(site.name, ())) or 'you have none'}.",
        )
    size = _number(data, "size", 1, MAX_SIZE)
    _, cpus, _ = resources_for({"gpus": gpus} if part.has_gpus and not part.whole_node else {}, site, part)
    fits = part.cores_per_node // cpus if not part.whole_node else 1
    if size > fits and not site_reservation:  # the local cluster is one node: its reservation holds them all
        raise CourseError(
            "size",
            f"{LABELS['size']}: at most {fits} on {part.name}, where each session takes "
            f"{cpus} of the node's {part.cores_per_node} cores.",
        )
    cost = estimate_cost(
        part, *resources_for({"gpus": gpus} if part.has_gpus and not part.whole_node else {}, site, part), hours
    )
    budget = (
        _number(data, "budget", 0.01, 1e6, whole=False) if data.get("budget") is not None else round(cost * size, 2)
    )
    instructors = data.get("instructors", [])
    if (
        not isinstance(instructors, list)
        or len(instructors) > 20
        or any(not isinstance(name, str) or name not in known_users for name in instructors)
    ):
        raise CourseError("instructors", f"{LABELS['instructors']}: users of this hub (at most 20).")
    repo, branch = _materials(data)
    idle = _number(data, "idle_minutes", 0, 600) if data.get("idle_minutes") not in (None, 0) else 0
    if idle and idle < min_idle_minutes:  # servers report activity only so often
        raise CourseError(
            "idle_minutes",
            f"{LABELS['idle_minutes']}: 0 (the hub's own timeout) or at least {min_idle_minutes} minutes.",
        )
    return Course(
        id=ident,
        title=title,
        site=site.name,
        partition=part.name,
        gpus=int(gpus),
        hours=hours,
        starts_at=starts,
        ends_at=ends,
        size=int(size),
        project=project,
        budget=budget,
        owner=owner,
        code=new_code(),
        instructors=tuple(dict.fromkeys([owner, *instructors])),
        materials_repo=repo,
        materials_branch=branch,
        idle_minutes=int(idle),
        site_reservation=site_reservation,
    )


def _site_reservation(data: Mapping, site: Site) -> str:
    """A remote site's course names the reservation the site made for it; the local cluster's
    course gets one the hub makes."""
    name = data.get("reservation") or ""
    if site.transport == "local":
        if name:
            raise CourseError(
                "reservation",
                f"{LABELS['reservation']}: the workbench makes the reservation on {site.title}; leave it empty.",
            )
        return ""
    if not isinstance(name, str) or not SITE_RESERVATION.fullmatch(name):
        raise CourseError(
            "reservation",
            f"{LABELS['reservation']}: the name of the reservation {site.title} "
            "made for the course (letters, digits, . _ -).",
        )
    return name


def with_participant(course: Course, user: str, local_account: str) -> Course:
    return replace(course, participants={**course.participants, user: local_account})


def materials_url(course: Course) -> str:
    """nbgitpuller's link inside the participant's server: pull, then open JupyterLab on it."""
    from urllib.parse import urlencode

    if not course.materials_repo:
        return "/lab"
    folder = re.sub(r"\.git$", "", course.materials_repo.rstrip("/").rsplit("/", 1)[-1]) or course.id
    query = {"repo": course.materials_repo, "urlpath": f"lab/tree/{folder}", "targetpath": folder}
    if course.materials_branch:
        query["branch"] = course.materials_branch
    return "/git-pull?" + urlencode(query)


def request_from_form(form: Mapping[str, str]) -> dict:
    """The course page's fields (text) -> the API's JSON (numbers where numbers are meant); what
    does not read as a number is passed on for course_from_request to refuse with its label."""
    data: dict = {}
    for key, value in form.items():
        value = value.strip()
        if key == "instructors":
            data[key] = [name for name in re.split(r"[\s,]+", value) if name]
        elif key in ("gpus", "hours", "size", "budget", "idle_minutes", "starts_at", "ends_at"):
            if value:
                try:
                    data[key] = float(value)
                except ValueError:
                    data[key] = value
        else:
            data[key] = value
    return data
