"""Quick-start profiles generated from the site catalogue, and the spawn form's data (pure).

Profiles keep wrapspawner ProfilesSpawner's contract — a list of (display name, key) the form
offers as `profile`, resolved by the hub to admin-owned settings — but all resolve to one
spawner class, so there is no wrapper between the hub and the job's report of its port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from aifa_workbench.model.cost import cost_hint, cost_rule, cost_unit, estimate_cost
from aifa_workbench.model.site import Partition, Site
from aifa_workbench.model.course import session_cost, session_server
from aifa_workbench.model.request import resources_for

CUSTOM = "custom"
FORM_INT_FIELDS = ("gpus", "cpus", "memory_gb", "hours")
_DIGITS = re.compile(r"[0-9]{1,6}")  # ASCII only: str.isdigit() takes "²", which int() refuses
_DECIMAL = re.compile(r"(?=\.?[0-9])[0-9]{0,4}\.[0-9]{0,2}")  # hours in quarters: "1.5", ".25", "2."
FORM_TEXT_FIELDS = ("site", "partition", "account", "reservation", "environment")
# The spawn form's labels, in the form and in the sentences that refuse a value of it.
FORM_LABELS = {
    "profile": "What do you want to run on?",
    "site": "Site",
    "partition": "Partition",
    "gpus": "GPUs",
    "cpus": "CPU cores",
    "memory_gb": "Memory (GB)",
    "hours": "Hours",
    "account": "Project (account)",
    "reservation": "Reservation",
    "environment": "Software",
}


def refused_form(options, field: str | None) -> dict:
    """What the form shows again after the hub refused it: the values sent (the form's fields
    only, short text) and the field to mark."""
    values = {}
    if isinstance(options, Mapping):
        for key in ("profile", *FORM_TEXT_FIELDS, *FORM_INT_FIELDS):
            value = options.get(key)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                continue
            values[key] = value if isinstance(value, (int, float)) else value[:64]
    return {"values": values, "field": field if field in FORM_LABELS else None}


@dataclass(frozen=True)
class Profile:
    slug: str
    title: str
    site: str
    options: Mapping


def site_short_name(site: Site) -> str:
    return site.title.split(" (")[0].split(" ·")[0]


def _profile_for(site: Site, part: Partition) -> Profile:
    hours = min(2, part.max_hours)
    if part.whole_node:
        what, options = "1 node", {}
    elif part.has_gpus:
        what, options = f"1 {site.gpu_label}", {"gpus": 1}
    else:
        what, options = f"{part.default_cpus} core{'s' if part.default_cpus > 1 else ''}", {}
    slug = f"{site.name}-{part.name}-{what.replace(' ', '').lower()}-{hours}h"
    title = f"{site_short_name(site)} · {part.name} · {what} · {hours} h"
    return Profile(slug, title, site.name, {"site": site.name, "partition": part.name, "hours": hours, **options})


def quick_start_profiles(sites: Mapping[str, Site]) -> list[Profile]:
    return [_profile_for(site, part) for site in sites.values() for part in site.partitions.values()]


def options_from_form(formdata: Mapping[str, list]) -> dict:
    """The spawn form's fields (lists of strings) -> user_options for parse_job_request.

    Numbers that are not plain digits are passed on as text so that the request parser refuses
    them with its sentence; empty fields are left out (defaults apply).
    """

    def first(key):
        values = formdata.get(key) or [""]
        return values[0].strip() if isinstance(values[0], str) else values[0]

    if first("course"):  # a course's card: its locked profile, nothing else
        return {"course": first("course")[:64]}
    profile = first("profile")
    if profile and profile != CUSTOM:  # a profile, and who pays for it, in which reservation
        return {"profile": profile, **{key: first(key) for key in ("account", "reservation") if first(key)}}
    options = {key: first(key) for key in FORM_TEXT_FIELDS if first(key)}
    for key in FORM_INT_FIELDS:
        value = first(key)
        if value:
            options[key] = (
                int(value)
                if _DIGITS.fullmatch(value)
                else float(value)
                if key == "hours" and _DECIMAL.fullmatch(value)
                else value
            )
    return options


def form_data(sites: Mapping[str, Site], profiles, accounts, reservations, load, windows=None) -> dict:
    """What the spawn form's script needs: per site its partitions' limits, billing and live load,
    the user's projects and reservations (with each reservation's partition and window)."""
    windows = windows or {}
    return {
        "sites": {
            site.name: {
                "title": site.title,
                "short": site_short_name(site),
                "gpu_label": site.gpu_label,
                "billing_unit": site.billing_unit,
                "accounts": list(accounts.get(site.name, ())),
                "reservations": list(reservations.get(site.name, ())),
                "reservation_windows": windows.get(site.name, {}),
                "environments": {e.slug: e.title for e in site.environments.values()},
                "default_environment": site.default_environment,
                "partitions": {
                    p.name: {
                        "title": p.title,
                        "purpose": purpose_of(p),
                        "gpu_model": p.gpu_model,
                        "gpus_per_node": p.gpus_per_node,
                        "cores_per_node": p.cores_per_node,
                        "memory_gb_per_node": p.memory_gb_per_node,
                        "max_hours": p.max_hours,
                        "whole_node": p.whole_node,
                        "cpus_per_gpu": p.cpus_per_gpu,
                        "memory_gb_per_gpu": p.memory_gb_per_gpu,
                        "default_cpus": p.default_cpus,
                        "default_memory_gb": p.default_memory_gb,
                        "cost_rule": cost_rule(p),
                        "unit": billing_unit(site, p),
                        "cost_hint": cost_hint(site, p),
                        "load": load.get(site.name, {}).get(p.name),
                    }
                    for p in site.partitions.values()
                },
            }
            for site in sites.values()
        },
        "profiles": [
            {
                "slug": p.slug,
                "title": p.title,
                "site": p.site,
                "options": dict(p.options),
                **profile_card(sites[p.site], p),
            }
            for p in profiles
        ],
        "labels": FORM_LABELS,
    }


def profile_card(site: Site, profile: Profile) -> dict:
    """What a quick-start card says: purpose, hardware, what the job gets, cost in the site's unit."""
    part = site.partitions[profile.options["partition"]]
    gpus, cpus, memory_gb = resources_for(profile.options, site, part)
    hours = profile.options["hours"]
    hardware = (
        f"{part.gpu_model}, {part.gpus_per_node} {site.gpu_label}s per node"
        if part.has_gpus
        else f"CPU only, {part.cores_per_node} cores per node"
    )
    what = (
        "a whole node, "
        if part.whole_node
        else (f"{gpus} {site.gpu_label}{'s' if gpus != 1 else ''}, " if gpus else "")
    )
    return {
        "purpose": purpose_of(part),
        "hardware": hardware,
        "where": f"{site_short_name(site)} · {part.name}",
        "what": f"{what}{cpus} core{'s' if cpus != 1 else ''}, {memory_gb} GB, {hours} h",
        "cost": f"≈ {estimate_cost(part, gpus, cpus, memory_gb, hours):.1f} {cost_unit(part)}",
        "partition": part.name,
        "gpus_per_node": part.gpus_per_node,
    }


def purpose_of(part: Partition) -> str:
    """What a newcomer uses the partition for: the catalogue's words, or plain defaults."""
    if part.purpose:
        return part.purpose
    if part.whole_node:
        return "Train on a whole GPU node" if part.has_gpus else "A whole node for heavy computing"
    return "Try a model on one GPU" if part.has_gpus else "Notebooks and data preparation, no GPU"


def billing_unit(site: Site, part: Partition) -> str:
    return cost_unit(part)


def describe_cost(site: Site, part: Partition, gpus: int, cpus: int, memory_gb: int, hours: int) -> str:
    cost = estimate_cost(part, gpus, cpus, memory_gb, hours)
    what = (
        "1 node"
        if part.whole_node
        else (
            f"{gpus} {site.gpu_label}{'s' if gpus != 1 else ''}" if gpus else f"{cpus} core{'s' if cpus != 1 else ''}"
        )
    )
    return f"{site_short_name(site)} {part.name}, {what}, {hours} h ≈ {cost:.1f} {billing_unit(site, part)}"


def course_cards(courses, sites: Mapping[str, Site]) -> list[dict]:
    """The spawn form's cards of the user's courses (model.course.Course), with their cost."""
    cards = []
    for course in courses:
        site = sites.get(course.site)
        if site is None or course.partition not in site.partitions:
            continue
        part = site.partitions[course.partition]
        cards.append(
            {
                "id": course.id,
                "server": session_server(course.id),
                "title": course.title,
                "where": f"{site_short_name(site)} · {part.name}",
                "what": f"{course.gpus} {site.gpu_label}{'s' if course.gpus != 1 else ''}, {course.hours:g} h"
                if course.gpus
                else f"{course.hours:g} h",
                "cost": f"≈ {session_cost(course, site):.1f} {cost_unit(part)}",
                "starts_at": course.starts_at,
                "ends_at": course.ends_at,
            }
        )
    return cards
