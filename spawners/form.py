"""The spawn form: what it shows of each site (load, reservation windows, budgets) and its page
(spawners/templates/spawn_form.html.j2)."""

from __future__ import annotations

import dataclasses

from jinja2 import Environment, FunctionLoader, StrictUndefined

from aifa_workbench.model import session as session_mod
from aifa_workbench.model.request import UserContext
from aifa_workbench.sites.errors import SiteError

from . import profiles as profiles_mod
from .script import template_source

_FORM = Environment(loader=FunctionLoader(template_source), undefined=StrictUndefined, autoescape=True)


def options_from_form(formdata) -> dict:
    return profiles_mod.options_from_form(formdata)


def epoch_windows(site, windows: dict) -> dict:
    """Reservation windows as Slurm gives them (the site's local time) in epoch seconds."""
    return {
        name: {
            "partition": w["partition"] if w["partition"] in site.partitions else "",
            "active": w["active"],
            "start": session_mod.site_time_to_epoch(w["start"], site.timezone),
            "end": session_mod.site_time_to_epoch(w["end"], site.timezone),
        }
        for name, w in windows.items()
    }


def without_course_reservations(context: UserContext, book) -> UserContext:
    """A course's reservation serves its card only (model.course), never a card of its own."""
    return dataclasses.replace(
        context,
        reservations={
            name: tuple(r for r in found if not (book and book.is_course_reservation(r)))
            for name, found in context.reservations.items()
        },
    )


async def site_data(sites, profiles, context: UserContext, facts_of, budgets_of, user: str, log) -> dict:
    """The form's data of every site: `facts_of(site name)` (SlurmFacts) gives the local
    cluster's load and the reservations' windows, `budgets_of(site, accounts)` the budgets.
    A site that does not answer shows without them."""
    load, windows = {}, {}
    for name, site in sites.items():
        try:
            if site.transport == "local":
                load[name] = await facts_of(name).partition_load(user)
            if context.reservations.get(name):
                windows[name] = epoch_windows(
                    site, await facts_of(name).reservation_windows(user, context.reservations[name])
                )
        except SiteError as e:
            log.warning("No partition load or reservation windows for %s: %s", name, e.detail or e)
    data = profiles_mod.form_data(sites, profiles, context.accounts, context.reservations, load, windows)
    for name, site in sites.items():
        try:
            found = await budgets_of(site, context.accounts.get(name, ()))
        except SiteError as e:
            log.warning("No budgets for %s on %s: %s", user, name, e.detail or e)
            found = {}
        data["sites"][name]["budgets"] = {account: b.to_dict() for account, b in found.items()}
    return data


def page(
    data: dict,
    *,
    courses: list[dict],
    spawn_base: str,
    support: str,
    refused: dict | None,
    last_options: dict,
    default_site: str,
) -> str:
    """The form's page. `refused`: the values of a form the hub refused, shown again once; else
    the form opens on the user's last choice (`last_options`: JupyterHub keeps the last options).
    A course's card starts its own named server (course-<id>), whichever server the form is for."""
    data = {
        **data,
        "courses": courses,
        "spawn_base": spawn_base,
        "support": support,
        "refused": refused,
        "remembered": None if refused else profiles_mod.refused_form(last_options, None),
    }
    return _FORM.get_template("spawn_form.html.j2").render(data=data, default_site=default_site)
