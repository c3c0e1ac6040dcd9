"""Admission: what a user asks for becomes a job request, or a refusal in the form's words.

In order: a course's locked profile (its participants, its window, its named server), what the
user may use on each site (accounts, reservations), the request checked against the catalogue,
a site the hub can reach, a course's project kept to its card, and the project's budget."""

from __future__ import annotations

import asyncio
import time
import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

from aifa_workbench.model import budget as budget_mod, course as model_course
from aifa_workbench.model.cost import estimate_cost
from aifa_workbench.model.request import JobRequest, RequestError, UserContext, parse_job_request
from aifa_workbench.model.ttl_cache import MISSING, TtlCache
from aifa_workbench.sites.errors import SiteError

from . import profiles as profiles_mod
from .metrics import site_reason

# Projects' billing files read on remote sites: {(site, user, project): (expires, Budget | None)}
PROJECT_BUDGET_TTL = 300.0
_PROJECT_BUDGETS = TtlCache(PROJECT_BUDGET_TTL)  # (site, user, account) -> its budget, or None


@dataclass(frozen=True)
class Applicant:
    """Who asks for a server, and what the hub knows to answer them."""

    user: str  # the hub user
    server_name: str  # "" for their default server
    sites: Mapping  # the catalogue's enabled sites, by name
    default_site: str
    profiles: dict  # quick-start profile slug -> its options
    personal_named_servers: int  # named servers of their own a user may have
    from_the_form: bool  # asked by the spawn form's page (not the REST API)
    local_username: Callable[[], str]  # their account on the local cluster
    site_account: Callable[[str], dict]  # site name -> {username, accounts} of theirs there
    facts_of: Callable  # site name -> SlurmFacts
    control_of: Callable  # site name -> JobControl
    courses: object  # the hub's courses (hub_config.courses.book.Courses: book, config), or None
    log: object


@dataclass(frozen=True)
class Admitted:
    request: JobRequest
    course: object = None  # the course whose session this is, or None


@dataclass(frozen=True)
class Refusal:
    sentence: str  # what the user reads
    form: dict | None = None  # the refused form's values, to show it again
    step: str = ""  # which check refused, for the hub's metrics: admission:<check>, or site:<reason>


class _Refused(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.sentence)
        self.refusal = refusal


async def admit(who: Applicant, options) -> Admitted | Refusal:
    step = "course"
    try:
        course, options = course_options(who, options)
        step = "request"
        request = await _parsed(who, options)
        step = "reach"
        _check_reach_and_course(who, request, course)
        step = "budget"
        await _check_budget(who, request, options)
    except _Refused as e:
        return dataclasses.replace(e.refusal, step=e.refusal.step or f"admission:{step}")
    return Admitted(request, course)


def course_options(who: Applicant, options):
    """A course's locked profile: {"course": id} and nothing else, by a participant, in its window,
    as the named server course-<id> and no other (instructors' scopes name that server only)."""
    by_name = model_course.course_of_server(who.server_name)
    asked = options.get("course") if isinstance(options, dict) else None
    if by_name is None and asked is None:
        if who.server_name and who.personal_named_servers == 0:
            raise _Refused(
                Refusal(
                    "This workbench runs one session per person (besides a course's): use your "
                    "default server, or stop it first."
                )
            )
        return None, options
    if by_name is not None and not options:  # the server's name alone says which course
        options, asked = {"course": by_name}, by_name
    if asked != by_name:
        raise _Refused(
            Refusal(
                "A course's session runs as a server of its own, named course- and the course's "
                "id: start it from the course's card on the start page."
            )
        )
    book = who.courses.book if who.courses is not None else None
    course = book.courses.get(asked) if book and isinstance(asked, str) else None
    if course is None or who.user not in course.participants or len(options) != 1:
        raise _Refused(
            Refusal(
                "You can start a course's session only for a course you joined, and its settings "
                "are the course's: join with your trainer's code first."
            )
        )
    refusal = model_course.spawn_refusal(course, time.time(), who.courses.config.last_start_minutes)
    if refusal:
        raise _Refused(Refusal(refusal))
    return course, {**model_course.session_options(course), "hours": model_course.session_fits(course, time.time())}


async def _parsed(who: Applicant, options) -> JobRequest:
    try:
        wanted = options.get("reservation") if isinstance(options, dict) else None
        wanted_site = options.get("site", who.default_site) if isinstance(options, dict) else None
        return parse_job_request(
            options, who.sites, await user_context(who, wanted, wanted_site), who.default_site, who.profiles
        )
    except RequestError as e:
        if not who.from_the_form:  # the REST API's callers keep the options' names
            raise _Refused(Refusal(str(e))) from None
        raise _Refused(
            Refusal(str(e.naming(profiles_mod.FORM_LABELS)), profiles_mod.refused_form(options, e.field))
        ) from None
    except SiteError as e:
        who.log.warning("Spawn request of %s not checked: %s", who.user, e.detail or e)
        raise _Refused(Refusal(e.sentence, step=site_reason(e))) from None


def _check_reach_and_course(who: Applicant, request: JobRequest, course) -> None:
    site = who.sites[request.site]
    if site.transport != "local" and site.reach is None:
        raise _Refused(
            Refusal(
                f"Servers on {site.title} cannot be started from this hub: the site catalogue "
                "does not say how the hub reaches it. Choose another site."
            )
        )
    if course is None and who.courses is not None and who.courses.book.of_account(request.account):
        raise _Refused(
            Refusal(
                f"The project {request.account} is a course's: its sessions start from the "
                "course's card on the start page, as the course set them."
            )
        )


async def _check_budget(who: Applicant, request: JobRequest, options) -> None:
    """A request costing more than its project has left is refused, in words; when the site's
    accounting does not answer, Slurm still enforces the budget at sbatch."""
    site = who.sites[request.site]
    try:
        budget = (await budgets(who, site, [request.account], fresh=True)).get(request.account)
    except SiteError as e:
        who.log.warning("Budget of %s not checked: %s", request.account, e.detail or e)
        return
    part = site.partitions[request.partition]
    sentence = budget and budget_mod.refusal(
        budget, estimate_cost(part, request.gpus, request.cpus, request.memory_gb, request.hours)
    )
    if sentence:
        raise _Refused(Refusal(sentence, profiles_mod.refused_form(options, "hours") if who.from_the_form else None))


async def user_context(who: Applicant, wanted_reservation=None, wanted_site=None) -> UserContext:
    """What the user may use on each site. Raises SiteError when a site does not answer."""
    accounts, reservations = {}, {}
    for site in who.sites.values():
        if site.accounts_from == "slurm":
            facts = who.facts_of(site.name)
            local = who.local_username() if site.transport == "local" else None
            accounts[site.name] = await facts.user_accounts(who.user, local)
            reservations[site.name] = await _reservations(who, facts, accounts[site.name], wanted_reservation, local)
        else:
            entry = who.site_account(site.name)
            accounts[site.name] = tuple(entry.get("accounts", ()))
            if wanted_reservation and site.name == wanted_site and entry.get("username"):  # the site's word
                reservations[site.name] = await _reservations(
                    who, who.facts_of(site.name), accounts[site.name], wanted_reservation, entry["username"]
                )
    return UserContext(accounts=accounts, reservations=reservations)


async def _reservations(who: Applicant, facts, accounts, wanted, site_user=None) -> tuple[str, ...]:
    """The user's reservations; when the controller does not answer, none (a request naming
    one is then refused with the reason; sbatch would be refused anyway)."""
    try:
        return await facts.reservations(who.user, accounts, wanted, site_user)
    except SiteError:
        if wanted:
            raise
        return ()


async def budgets(who: Applicant, site, accounts, fresh: bool = False) -> dict:
    """What is left of each of the user's projects on `site` that has a budget (model.budget)."""
    if not site.budget or not accounts:
        return {}
    if site.budget["source"] == "lumi_project_info":
        if not who.site_account(site.name).get("username"):
            return {}  # no account there: nothing to read, and no login to try
        found = await asyncio.gather(*(_project_budget(who, site, a, fresh) for a in accounts))
        return {a: b for a, b in zip(accounts, found, strict=True) if b is not None}
    site_user = who.local_username() if site.transport == "local" else who.site_account(site.name).get("username")
    minutes = await who.facts_of(site.name).budgets(who.user, tuple(accounts), site_user, fresh=fresh)
    return budget_mod.budgets_from_slurm(minutes, site.budget.get("per_unit_hour", 1), site.billing_unit)


async def _project_budget(who: Applicant, site, account: str, fresh: bool):
    """One project's billing file on the site, read as the user at most every few minutes
    (the form asks on each view; LUMI updates the file far less often)."""
    key = (site.name, who.user, account)
    budget = MISSING if fresh else _PROJECT_BUDGETS.get(key)
    if budget is MISSING:
        try:
            text = await who.control_of(site.name).project_file(who.user, site.budget["path"], account)
            budget, ttl = budget_mod.budget_from_lumi_file(text, account, site.billing_unit), PROJECT_BUDGET_TTL
        except SiteError as e:
            who.log.info("Budget of %s on %s not read: %s", account, site.name, e.detail or e)
            budget, ttl = None, PROJECT_BUDGET_TTL / 5
        _PROJECT_BUDGETS.put(key, budget, ttl)
    return budget
