"""Courses on the hub: the book of courses (state/courses.json, 0600), and what making, joining
and ending one does on the local cluster and in the hub.

Making one: the course's Slurm account under the trainer's project (the hub coordinates the
projects), its reservation (the root helper, `aifa-course-helper`, through one sudo rule), the hub
groups `course-<id>` and `course-<id>-instructors` and the instructors' role (model.course).
Joining: the participant's account on the local cluster (their own, or a guest account of the
pool given to them alone) is added to the course account; they enter the course's group.
Ending (the window's end, or the trainer): servers of the course stop, the reservation goes, the
participations end and each guest account is wiped before it is given to anyone else.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import time
from datetime import timezone
from dataclasses import dataclass, field, replace
from pathlib import Path

from aifa_workbench.model import course as model
from aifa_workbench.model.course import Course, CourseError, course_from_dict
from aifa_workbench.model.files import write_atomically
from aifa_workbench.sites.errors import SiteError
from aifa_workbench.sites.slurm_facts import SlurmFacts, forget_accounts

log = logging.getLogger("JupyterHub")


@dataclass
class CoursesConfig:
    """The rules courses run by, from the settings (`courses`)."""

    cluster: str = "aifa-local"
    helper: str = "/usr/local/sbin/aifa-course-helper"
    slurm_bin: str = "/usr/bin"
    guest_prefix: str = "aifa-guest"
    guest_count: int = 0
    users_group: str = "aifa-users"
    trainer_groups: tuple[str, ...] = ("trainers",)
    every_seconds: float = 30.0
    last_start_minutes: int = 15  # no new session of a course this close to its end
    activity_seconds: int = 300  # how often servers report activity: a course's idle timeout is 3 times that at least
    support: str = ""
    public_url: str = ""  # scheme://host[:port] people reach the hub at, for invite links
    sites: dict = field(default_factory=dict)  # where courses run: {name: catalogue Site}


class CourseBook:
    """Every course, kept in one JSON file only the hub's user reads."""

    def __init__(self, path: Path | None):
        self.path, self.courses = path, {}
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            self.courses = {ident: course_from_dict(c) for ident, c in data.get("courses", {}).items()}

    def of_account(self, account: str) -> Course | None:
        """The course whose Slurm account this is (any state: an ended course's account is not a project)."""
        if not isinstance(account, str) or not account.startswith("course-"):
            return None
        return self.courses.get(account[len("course-") :])

    def save(self) -> None:
        if self.path is None:
            return
        write_atomically(
            self.path,
            json.dumps({"courses": {i: c.to_dict() for i, c in self.courses.items()}}, indent=1, sort_keys=True),
            fsync=True,
        )

    def put(self, course: Course) -> None:
        self.courses[course.id] = course
        self.save()

    def by_code(self, code: str) -> Course | None:
        wanted = model.normal_code(code)
        return next((c for c in self.courses.values() if wanted and c.code == wanted and c.state == "scheduled"), None)

    def active_of(self, user: str) -> list[Course]:
        """The courses `user` takes part in that have not ended."""
        return [c for c in self.courses.values() if c.state == "scheduled" and user in c.participants]

    def is_course_reservation(self, name: str) -> bool:
        return any(c.reservation == name for c in self.courses.values())

    def taught_by(self, user: str) -> list[Course]:
        return [c for c in self.courses.values() if user in c.instructors or user == c.owner]

    def local_account(self, user: str) -> str:
        """Who `user` is on the local cluster: the account a course gave them, else their own name."""
        for course in self.courses.values():
            if course.state in HOLDING and not course.remote and user in course.participants:
                return course.participants[user]
        return user

    def guests_in_use(self) -> set[str]:
        """Accounts lent by courses not ended yet (an ending course's until they are wiped)."""
        return {
            acct
            for c in self.courses.values()
            if c.state in HOLDING and not c.remote
            for acct in c.participants.values()
        }

    def groups_of(self, user: str) -> set[str]:
        """Hub groups the courses give `user` (a federated login adds them to the provider's)."""
        groups = {c.group for c in self.active_of(user)}
        groups |= {c.instructor_group for c in self.taught_by(user) if c.state == "scheduled"}
        return groups


@dataclass(frozen=True, eq=False)  # one per hub: compared by identity
class Courses:
    """The hub's courses: every course (the book) and the rules they run by."""

    book: CourseBook
    config: CoursesConfig


# The reservation outlasts the window a little: the hub stops the course's sessions at the window's
# end, saying why, before Slurm would end them as jobs of a reservation that is over.
RESERVATION_GRACE = 600
HOLDING = ("scheduled", "ending")  # states in which a course holds its participants' accounts


def guest_names(config: CoursesConfig) -> list[str]:
    return [f"{config.guest_prefix}{n:02d}" for n in range(1, config.guest_count + 1)]


def own_local_account(user: str, users_group: str) -> bool:
    """Whether `user` has a unix account of their own among the workbench's users here."""
    try:
        return user in grp.getgrnam(users_group).gr_mem
    except KeyError:
        return False


def site_account_for(config: CoursesConfig, identities, course: Course, user: str) -> str:
    """A remote course's participant uses their own account on the site, in the course's project."""
    site = config.sites[course.site]
    entry = identities.site_account(user, course.site) if identities is not None else {}
    if not entry.get("username"):
        raise CourseError(
            "code",
            f"You have no {site.title} account the workbench knows, so you cannot join "
            f"this course there. Get one from {site.title}, then tell "
            f"{config.support or 'your trainer'} your username.",
        )
    if course.project not in entry.get("accounts", ()):
        raise CourseError(
            "code",
            f"Your {site.title} account is not in project {course.project}, which pays "
            "for this course: ask your trainer to add you to it.",
        )
    return entry["username"]


def local_account_for(book: CourseBook, config: CoursesConfig, user: str) -> str:
    """The participant's account on the local cluster: their own, the guest account they already
    hold, or a free one of the pool. Raises CourseError when none is left."""
    if own_local_account(user, config.users_group):
        return user
    for course in book.active_of(user):  # the guest they hold in a course going on (never an ending one's)
        if not course.remote:
            return course.participants[user]
    free = [name for name in guest_names(config) if name not in book.guests_in_use()]
    if not free:
        raise CourseError(
            "code",
            "Every guest place of the workbench is taken right now, so you cannot join "
            f"yet. Tell {config.support or 'your trainer'}.",
        )
    return free[0]


# --- the hub side: groups and the instructors' role ---------------------------------------------
def hub_groups_for(app, course: Course) -> None:
    from jupyterhub import orm, roles

    db = app.db
    for name in (course.group, course.instructor_group):
        if orm.Group.find(db, name) is None:
            db.add(orm.Group(name=name))
    db.commit()
    spec = model.instructor_role(course)
    roles.create_role(db, {k: v for k, v in spec.items() if k != "groups"})
    group = orm.Group.find(db, course.instructor_group)
    roles.grant_role(db, group, spec["name"])
    for name in course.instructors:
        add_to_group(app, name, course.instructor_group)


def named_server_limit(personal: int, book: CourseBook):
    """JupyterHub's named_server_limit_per_user, per request: the named servers of their own a user
    may have (`personal`), plus one for each course session they hold or may start in `book` (course-<id>:
    kept after the course for its ended card). At least 1, JupyterHub's 0 being no limit at all;
    the spawner refuses to start a named server of their own beyond `personal`."""

    def limit(handler) -> int:
        user = handler.current_user
        orm_user = getattr(user, "orm_user", None)
        names = set(getattr(orm_user, "orm_spawners", None) or {})
        sessions = {name for name in names if model.course_of_server(name)}
        if isinstance(getattr(user, "name", None), str):
            sessions |= {model.session_server(c.id) for c in book.active_of(user.name)}
        return max(1, personal + len(sessions))

    return limit


def refresh_instructor_role(app, course: Course) -> None:
    from jupyterhub import roles

    spec = model.instructor_role(course)
    roles.create_role(app.db, {k: v for k, v in spec.items() if k != "groups"})


def add_to_group(app, username: str, group_name: str) -> None:
    from jupyterhub import orm

    user, group = orm.User.find(app.db, username), orm.Group.find(app.db, group_name)
    if user is not None and group is not None and group not in user.groups:
        user.groups.append(group)
        app.db.commit()


def drop_hub_groups(app, course: Course) -> None:
    from jupyterhub import orm, roles

    roles.delete_role(app.db, model.instructor_role(course)["name"]) if orm.Role.find(
        app.db, model.instructor_role(course)["name"]
    ) else None
    for name in (course.group, course.instructor_group):
        group = orm.Group.find(app.db, name)
        if group is not None:
            app.db.delete(group)
    app.db.commit()


def load_roles_of(book: CourseBook) -> list[dict]:
    """The instructors' roles of courses not ended (JupyterHub deletes at start the roles its
    configuration does not name)."""
    return [model.instructor_role(c) for c in book.courses.values() if c.state == "scheduled"]


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


# --- making, joining, ending ----------------------------------------------------------------------
# Making, joining and ending courses change the book and the cluster one at a time: a guest account
# goes to one person, and a join never interleaves with the end of its course.
_CHANGING = asyncio.Lock()


async def create(app, control, courses: Courses, identities, course: Course, per_unit_hour: float) -> Course:
    async with _CHANGING:
        return await _create(app, control, courses, identities, course, per_unit_hour)


async def _create(app, control, courses: Courses, identities, course: Course, per_unit_hour: float) -> Course:
    """The course's account and reservation on the cluster, then its groups and role in the hub;
    `identities` (sites.registry.Identities) say who the trainer is on a remote course's site."""
    book, config = courses.book, courses.config
    if course.id in book.courses:
        raise CourseError("id", f"{model.LABELS['id']}: a course named {course.id} exists already; choose another.")
    site = config.sites[course.site]
    if course.remote:  # the site made the reservation: the trainer's login must see it
        who = identities.site_username(course.owner, course.site) if identities is not None else None
        usable = await SlurmFacts(control).reservations(course.owner, (course.project,), course.reservation, who)
        if course.reservation not in usable:
            raise CourseError(
                "reservation",
                f"{site.title} has no reservation {course.reservation} that your "
                "account there may use: check its name, or ask the site for it.",
            )
        return _open(app, book, course)
    if await control.account_exists(config.cluster, course.account):  # not ours: never taken over
        raise CourseError(
            "id", f"{model.LABELS['id']}: the cluster has an account {course.account} already; choose another."
        )
    await control.add_course_account(
        config.cluster,
        course.account,
        course.project,
        model.budget_minutes(course, per_unit_hour),
        model.session_minutes(course),
    )
    try:
        await control.course_helper(
            config.helper,
            "reserve",
            name=course.reservation,
            account=course.account,
            partition=course.partition,
            start=_stamp(max(course.starts_at, time.time() + 5)),
            end=_stamp(course.ends_at + RESERVATION_GRACE),
            cores=model.reservation_cores(course, site),
        )
    except SiteError as e:
        await control.remove_course_account(config.cluster, course.account)
        if "nodes are busy" in str(e.detail or ""):
            raise CourseError(
                "size",
                f"{site.title} cannot hold {course.size} sessions on {course.partition} "
                "in that window: other reservations hold its cores. "
                "Choose fewer participants, another partition or another time.",
            ) from None
        raise
    return _open(app, book, course)


def _open(app, book: CourseBook, course: Course) -> Course:
    book.put(course)
    hub_groups_for(app, course)
    log.info(
        "Course %s made by %s: %s %s, %d places, reservation %s",
        course.id,
        course.owner,
        course.site,
        course.partition,
        course.size,
        course.reservation,
    )
    return course


async def join(app, control, courses: Courses, identities, user: str, code: str, now: float | None = None) -> Course:
    """`user` joins the course of `code`; `identities` (sites.registry.Identities) say who they are
    on a remote course's site."""
    book, config = courses.book, courses.config
    async with _CHANGING:
        course = book.by_code(code)
        refusal = model.join_refusal(course, user, time.time() if now is None else now)
        if refusal:
            raise CourseError("code", refusal)
        if user in course.participants:
            return course
        if course.remote:
            account = site_account_for(config, identities, course, user)
        else:
            account = local_account_for(book, config, user)
            await control.course_member(
                config.cluster, account, course.account, add=True, partition=course.partition, gpus=course.gpus
            )
        course = model.with_participant(course, user, account)
        book.put(course)
        refresh_instructor_role(app, course)  # its scopes name each participant's course session
    add_to_group(app, user, course.group)
    forget_accounts(course.site, user)
    log.info("%s joined course %s (on the cluster as %s)", user, course.id, account)
    return course


def in_course(request, course: Course) -> bool:
    """Whether a server's job request is a session of `course` (its site, reservation and account)."""
    return request is not None and (request.site, request.reservation, request.account) == (
        course.site,
        course.reservation,
        course.account,
    )


async def stop_course_servers(app, course: Course) -> int:
    """Stop every server of the course's participants that runs in the course's account."""
    stopped = []
    for name in course.participants:
        from jupyterhub import orm

        orm_user = orm.User.find(app.db, name)
        if orm_user is None:
            continue
        user = app.users[orm_user]
        for server_name, spawner in list(user.spawners.items()):
            request = getattr(spawner, "job_request", None)
            if spawner.active and in_course(request, course) and not spawner.pending:
                spawner.stop_reason = "course_ended"
                stopped.append(_stop(app, user, server_name))
    await asyncio.gather(*stopped, return_exceptions=True)
    return len(stopped)


async def _stop(app, user, server_name: str) -> None:
    try:
        await app.proxy.delete_user(user, server_name)
        await user.stop(server_name)
    except Exception as e:  # one server failing to stop does not keep the others running
        log.error("Stopping %s's course server failed: %s", user.name, e)


async def end(app, control, courses: Courses, course: Course) -> Course:
    """The window's end (or the trainer's word): stop, unreserve, end participations."""
    async with _CHANGING:
        course = courses.book.courses[course.id]
        if course.state == "ended":
            return course
        return await _end(app, control, courses, course)


async def _end(app, control, courses: Courses, course: Course) -> Course:
    book, config = courses.book, courses.config
    course = replace(course, state="ending")  # nobody joins or starts; its guests stay lent
    book.put(course)
    servers = await stop_course_servers(app, course)
    if course.remote:  # the site's reservation and accounts are the site's
        book.put(replace(course, state="ended"))
        drop_hub_groups(app, course)
        log.info("Course %s ended: %d server(s) stopped", course.id, servers)
        return book.courses[course.id]
    await control.course_helper(config.helper, "unreserve", name=course.reservation)
    await control.cancel_account_jobs(course.account)  # what no server of the hub held
    others = {
        acct
        for c in book.courses.values()
        if c.state in HOLDING and c.id != course.id
        for acct in c.participants.values()
    }
    guests = sorted(
        {account for user, account in course.participants.items() if account != user and account not in others}
    )
    if guests:  # wiped, all at once (one search of the filesystems), before anyone else gets one
        await control.course_helper(config.helper, "release-guest", user=guests)
    for account in course.participants.values():
        await control.course_member(config.cluster, account, course.account, add=False)
    await control.remove_course_account(config.cluster, course.account)  # its jobs stay in the accounting
    book.put(replace(course, state="ended"))
    drop_hub_groups(app, course)
    log.info(
        "Course %s ended: %d server(s) stopped, %d participation(s) ended", course.id, servers, len(course.participants)
    )
    return book.courses[course.id]


async def stop_idle_course_servers(app, book: CourseBook, now: float | None = None) -> int:
    """A course's own idle timeout (idle_minutes): its sessions nobody used for that long stop,
    as the hub's idle culler stops any session after the hub-wide timeout."""
    from jupyterhub import orm

    now = time.time() if now is None else now
    stopping = []
    for course in book.courses.values():
        if course.state != "scheduled" or not course.idle_minutes:
            continue
        for name in course.participants:
            orm_user = orm.User.find(app.db, name)
            user = app.users[orm_user] if orm_user is not None else None
            for server_name, spawner in list(user.spawners.items()) if user else ():
                request, seen = getattr(spawner, "job_request", None), spawner.orm_spawner.last_activity
                idle = (
                    seen is not None and now - seen.replace(tzinfo=timezone.utc).timestamp() > course.idle_minutes * 60
                )
                if spawner.ready and in_course(request, course) and idle:
                    spawner.stop_reason = "idle"
                    log.info(
                        "Stopping %s's session in course %s: idle for %d minutes", name, course.id, course.idle_minutes
                    )
                    stopping.append(_stop(app, user, server_name))
    await asyncio.gather(*stopping)
    return len(stopping)


async def end_due_courses(app, control, courses: Courses, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    ended = []
    for course in list(courses.book.courses.values()):
        if course.state == "ending" or course.state == "scheduled" and now >= course.ends_at:
            try:
                await end(app, control, courses, course)
                ended.append(course.id)
            except SiteError as e:
                log.error("Course %s could not end yet: %s (trying again)", course.id, e.detail or e)
    return ended


def start_window_keeper(hub, control, courses: Courses) -> None:
    """Every `every_seconds`, end the courses whose window has passed, once `hub()` (the running
    JupyterHub app) has started (call from the config)."""
    from aifa_workbench.sites.background import in_background

    async def keep():
        app = hub()
        await app._start_future
        while True:
            try:
                await end_due_courses(app, control, courses)
                await stop_idle_course_servers(app, courses.book)
            except Exception:  # the keeper goes on: the next round tries again
                log.exception("Ending the courses whose window passed failed")
            await asyncio.sleep(courses.config.every_seconds)

    asyncio.get_event_loop().call_soon(lambda: in_background(keep(), "The course window keeper", log))
