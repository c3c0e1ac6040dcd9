"""The courses page (/hub/courses), the invite link (/hub/courses/join/<code>) and the REST API.

POST /hub/api/courses             make a course (trainers: scope custom:courses:create)
GET  /hub/api/courses             the courses one teaches (with code and participants) or joined
POST /hub/api/courses/join        {"code": …}: join during the window
POST /hub/api/courses/<id>/end    end it now (its owner, an instructor, an admin)
"""

from __future__ import annotations

import json
import math
import time

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from aifa_workbench.hub_config.courses import book as courses
from aifa_workbench.hub_config.runtime import WorkbenchHandler
from aifa_workbench.model import course as model
from aifa_workbench.model.course import CourseError
from aifa_workbench.sites.errors import SiteError
from aifa_workbench.spawners.profiles import course_cards
from aifa_workbench.sites.slurm_facts import SlurmFacts

CREATE_SCOPE = "custom:courses:create"
COURSE_ID = r"([a-z][a-z0-9-]{2,23})"
CUSTOM_SCOPES = {
    CREATE_SCOPE: {
        "description": "Make courses (workshops): a reservation, an account and a join code on the local cluster"
    }
}


def trainer_role(groups, users) -> dict:
    return {
        "name": "trainer",
        "description": "Trainers make courses (not an admin role)",
        "scopes": [CREATE_SCOPE],
        "groups": list(groups),
        "users": list(users),
    }


def control_of(workbench, config: courses.CoursesConfig, site_name: str):
    """The job control of a course's site (its slurm_bin is the courses' own)."""
    return workbench.controls.of(config.sites[site_name], config.slurm_bin)


def view(config: courses.CoursesConfig, course, teaching: bool, base_url: str) -> dict:
    data = {k: v for k, v in course.to_dict().items() if k not in ("code", "participants", "owner")}
    card = next(iter(course_cards([course], config.sites)), None)
    data["session"] = f"{card['where']} · {card['what']} · {card['cost']}" if card else ""
    if teaching:
        data.update(
            code=model.shown_code(course.code),
            owner=course.owner,
            join_url=f"{config.public_url.rstrip('/')}{base_url}courses/join/{course.code}",
            participants=sorted(course.participants),
        )
    return data


class CourseMixin(WorkbenchHandler):
    @property
    def hub_courses(self) -> courses.Courses:
        """The hub's courses (its handlers are there only where courses are on)."""
        return self.workbench.courses

    def shown(self, course, teaching: bool) -> dict:
        return view(self.hub_courses.config, course, teaching, self.hub.base_url)

    def person(self):
        """The user acting, with a token that may act for them (a job's token may not: it serves
        its own server only), else 403."""
        user = self.current_user
        if getattr(user, "kind", None) != "user" or not self.get_scope_filter("servers")(user.orm_user, kind="user"):
            raise web.HTTPError(403, "Courses are for people, with their own login or API token.")
        return user

    def teaches(self, course) -> bool:
        user = self.current_user
        return bool(user and (user.name in course.instructors or user.name == course.owner or user.admin))

    def may_create(self) -> bool:
        return CREATE_SCOPE in self.expanded_scopes

    async def trainer_projects(self) -> dict:
        """The trainer's projects on each site: Slurm's word on the local cluster, the registry's
        (hub_config.site_accounts.registry) on remote sites."""
        found, identities = {}, self.workbench.identities
        config = self.hub_courses.config
        for name, site in config.sites.items():
            if site.transport != "local":
                entry = identities.site_account(self.current_user.name, name) if identities else {}
                found[name] = tuple(entry.get("accounts", ()))
                continue
            try:
                found[name] = await SlurmFacts(control_of(self.workbench, config, name)).user_accounts(
                    self.current_user.name
                )
            except SiteError:
                found[name] = ()
        return {name: tuple(a for a in accounts if not a.startswith("course-")) for name, accounts in found.items()}

    async def create_course(self, data):
        known = {u.name for u in self.db.query(orm.User)}
        hub_courses = self.hub_courses
        config = hub_courses.config
        course = model.course_from_request(
            data,
            self.current_user.name,
            await self.trainer_projects(),
            config.sites,
            known,
            time.time(),
            min_idle_minutes=math.ceil(3 * config.activity_seconds / 60),
        )
        site = config.sites[course.site]
        per_unit_hour = (site.budget or {}).get("per_unit_hour", 1)
        return await courses.create(
            self.app,
            control_of(self.workbench, config, course.site),
            hub_courses,
            self.workbench.identities,
            course,
            per_unit_hour,
        )

    async def join_course(self, code):
        hub_courses = self.hub_courses
        course = hub_courses.book.by_code(code) if isinstance(code, str) else None
        site_name = course.site if course else next(iter(hub_courses.config.sites))
        return await courses.join(
            self.app,
            control_of(self.workbench, hub_courses.config, site_name),
            hub_courses,
            self.workbench.identities,
            self.current_user.name,
            code,
        )

    async def end_course(self, ident):
        hub_courses = self.hub_courses
        course = hub_courses.book.courses.get(ident)
        if course is None or not self.teaches(course):
            raise web.HTTPError(404, "No such course of yours.")
        if course.state == "ended":
            return course
        return await courses.end(
            self.app, control_of(self.workbench, hub_courses.config, course.site), hub_courses, course
        )


class CoursesAPIHandler(CourseMixin, APIHandler):
    def _refuse(self, error: Exception, status: int = 400):
        field = getattr(error, "field", None)
        self.set_status(status)
        self.finish(
            json.dumps({"status": status, "message": getattr(error, "sentence", None) or str(error), "field": field})
        )

    @web.authenticated
    async def get(self):
        user = self.person()
        listed = [
            self.shown(c, self.teaches(c))
            for c in self.hub_courses.book.courses.values()
            if self.teaches(c) or user.name in c.participants
        ]
        self.finish(json.dumps({"courses": listed}))

    @web.authenticated
    async def post(self):
        self.person()
        if not self.may_create():
            raise web.HTTPError(403, "Only trainers make courses; ask your workbench administrator.")
        try:
            course = await self.create_course(self.get_json_body())
        except (CourseError, SiteError) as e:
            return self._refuse(e)
        self.set_status(201)
        self.finish(json.dumps(self.shown(course, True)))


class CourseJoinAPIHandler(CoursesAPIHandler):
    @web.authenticated
    async def post(self):
        self.person()
        body = self.get_json_body() or {}
        try:
            course = await self.join_course(body.get("code") if isinstance(body, dict) else None)
        except (CourseError, SiteError) as e:
            return self._refuse(e)
        self.finish(json.dumps(self.shown(course, self.teaches(course))))


class CourseEndAPIHandler(CoursesAPIHandler):
    @web.authenticated
    async def post(self, ident):
        self.person()
        try:
            course = await self.end_course(ident)
        except SiteError as e:
            self.log.error("Ending course %s: %s", ident, e.detail or e)
            return self._refuse(e, 502)
        self.finish(json.dumps(self.shown(course, True)))


class CoursesPageHandler(CourseMixin, BaseHandler):
    """Join with a code; trainers make courses and see theirs: code, link, participants."""

    @web.authenticated
    async def get(
        self,
        message: str = "",
        failed: bool = False,
        code: str = "",
        form: dict | None = None,
        field: str | None = None,
    ):
        user = self.current_user
        book = self.hub_courses.book
        taught = [self.shown(c, True) for c in book.courses.values() if self.teaches(c)]
        joined = [self.shown(c, False) for c in book.active_of(user.name)]
        projects = await self.trainer_projects() if self.may_create() else {}
        html = await self.render_template(
            "courses.html",
            taught=taught,
            joined=joined,
            may_create=self.may_create(),
            projects=projects,
            sites=self.hub_courses.config.sites,
            message=message,
            failed=failed,
            code=code,
            form=form or {},
            field=field,
            labels=model.LABELS,
            now=time.time(),
        )
        self.finish(html)

    @web.authenticated
    async def post(self):
        action = self.get_body_argument("action", "")
        try:
            if action == "join":
                course = await self.join_course(self.get_body_argument("code", "")[:40])
                return self.redirect(self.hub.base_url + "spawn")
            if action == "end":
                course = await self.end_course(self.get_body_argument("course", "")[:40])
                return await self.get(f"The course \u201c{course.title}\u201d has ended.")
            if action == "create" and self.may_create():
                form = {k: self.get_body_argument(k, "")[:400] for k in model.LABELS}
                course = await self.create_course(model.request_from_form(form))
                return await self.get(
                    f"The course \u201c{course.title}\u201d is ready. Its code is {model.shown_code(course.code)}."
                )
        except CourseError as e:
            form = {k: self.get_body_argument(k, "")[:400] for k in model.LABELS}
            return await self.get(str(e), True, form=form, field=e.field)
        except SiteError as e:
            return await self.get(e.sentence, True)
        raise web.HTTPError(400, "Unknown action.")


class CourseInviteHandler(CourseMixin, BaseHandler):
    """The invite link: the course's title and a Join button (the join itself is a POST)."""

    @web.authenticated
    async def get(self, code):
        course = self.hub_courses.book.by_code(code)
        refusal = model.join_refusal(course, self.current_user.name, time.time())
        self.finish(
            await self.render_template("course_join.html", course=course, refusal=refusal, code=model.normal_code(code))
        )


def handlers() -> list[tuple]:
    return [
        ("/courses", CoursesPageHandler),
        (r"/courses/join/([A-Za-z0-9-]{1,40})", CourseInviteHandler),
        ("/api/courses", CoursesAPIHandler),
        ("/api/courses/join", CourseJoinAPIHandler),
        (rf"/api/courses/{COURSE_ID}/end", CourseEndAPIHandler),
    ]
