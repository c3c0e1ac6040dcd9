"""Turn a user's `user_options` into a typed job request, or refuse them with a sentence.

This is the only path from what a user sends to what reaches a batch script: every value is
checked against the site catalogue, the user's own accounts and reservations, and bounds here,
and nothing unchecked survives. Pure: no Slurm, no I/O.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # the catalogue checks its Dask presets with these rules: no import cycle
    from aifa_workbench.model.site import Partition, Site

ALLOWED_KEYS = (
    "profile",
    "site",
    "partition",
    "gpus",
    "cpus",
    "memory_gb",
    "hours",
    "account",
    "reservation",
    "environment",
)


class RequestError(ValueError):
    """A user's request is not acceptable; the message is a sentence for the user, naming the
    option as the caller knows it (`'gpus'`: a notebook's keyword); `field` is that option."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def naming(self, labels: Mapping[str, str]) -> "RequestError":
        """The same sentence with the field's label (a form's "GPUs") where it names the key."""
        label = labels.get(self.field or "")
        if not label:
            return self
        return RequestError(str(self).replace(f"'{self.field}'", label, 1), self.field)


def shown(value, limit: int = 40) -> str:
    """A value the user sent, as it may be echoed in a sentence or a log: short, one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class UserContext:
    """What the user may use, per site: Slurm accounts and reservations."""

    accounts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reservations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRequest:
    site: str
    partition: str
    gpus: int
    cpus: int
    memory_gb: int
    hours: int | float  # quarter hours at the finest
    account: str
    environment: str
    reservation: str | None = None
    profile: str | None = None
    whole_node: bool = False


def _one_of(key: str, value, allowed) -> str:
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        names = ", ".join(allowed) if allowed else "none"
        raise RequestError(f"'{key}' must be one of: {names}; {shown(value)} is not one of them.", key)
    return value


def _whole_number(key: str, value, low: int, high: int) -> int:
    # bool is an int subclass: refuse it, and refuse strings, floats and the like.
    if type(value) is not int:
        raise RequestError(f"'{key}' must be a whole number from {low} to {high}.", key)
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be from {low} to {high}; {value} is out of range.", key)
    return value


def _hours(value, high: int) -> int | float:
    """Hours in quarter hours (0.25, 0.5, 1.5, …) up to the partition's limit; a whole number stays an int."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value * 4 != int(value * 4)
    ):
        raise RequestError(
            f"'hours' must be a number of hours from 0.25 to {high}, in quarter hours (0.25, 0.5, 1.5, …).", "hours"
        )
    if not 0.25 <= value <= high:
        raise RequestError(f"'hours' must be from 0.25 to {high}; {value:g} is out of range.", "hours")
    return int(value) if value == int(value) else float(value)


def _fixed(key: str, options: Mapping, value: int, why: str) -> int:
    if key in options and options[key] != value:
        raise RequestError(f"'{key}' must be {value} on this partition: {why}.", key)
    return value


def _resources(options: Mapping, site: Site, part: Partition) -> tuple[int, int, int]:
    """gpus, cpus, memory_gb for the partition, whole-node partitions forcing whole nodes."""
    if part.whole_node:
        why = f"{part.name} gives whole nodes only"
        return (
            _fixed("gpus", options, part.gpus_per_node, why),
            _fixed("cpus", options, part.cores_per_node, why),
            _fixed("memory_gb", options, part.memory_gb_per_node, why),
        )
    if not part.has_gpus:
        gpus = _fixed("gpus", options, 0, f"{part.name} has no GPUs")
        cpus = _whole_number("cpus", options.get("cpus", part.default_cpus), 1, part.cores_per_node)
        memory = _whole_number(
            "memory_gb", options.get("memory_gb", part.default_memory_gb), 1, part.memory_gb_per_node
        )
        return gpus, cpus, memory
    gpus = _whole_number("gpus", options.get("gpus", 1), 1, part.gpus_per_node)
    cpus = _whole_number("cpus", options.get("cpus", gpus * part.cpus_per_gpu), 1, gpus * part.cpus_per_gpu)
    memory = _whole_number(
        "memory_gb", options.get("memory_gb", gpus * part.memory_gb_per_gpu), 1, gpus * part.memory_gb_per_gpu
    )
    return gpus, cpus, memory


def _account(options: Mapping, site: Site, user: UserContext) -> str:
    mine = tuple(user.accounts.get(site.name, ()))
    if not mine:
        raise RequestError(
            f"You have no project (Slurm account) on {site.title} yet; ask your workbench "
            "administrator or your project's PI to add you."
        )
    return _one_of("account", options.get("account", mine[0]), mine)


def _reservation(options: Mapping, site: Site, user: UserContext) -> str | None:
    value = options.get("reservation")
    if value in (None, ""):
        return None
    if not site.reservations_allowed:
        raise RequestError(f"'reservation' cannot be used on {site.title}.", "reservation")
    return _one_of("reservation", value, user.reservations.get(site.name, ()))


def parse_job_request(
    options: Mapping,
    sites: Mapping[str, Site],
    user: UserContext,
    default_site: str,
    profiles: Mapping[str, Mapping] | None = None,
) -> JobRequest:
    """Validate `options` (a user's `user_options`) and return a JobRequest.

    Raises RequestError with a sentence naming the field and the allowed values.
    """
    if not isinstance(options, Mapping):
        raise RequestError("The server options must be a JSON object.")
    unknown = sorted(str(k) for k in options if k not in ALLOWED_KEYS)
    if unknown:
        named = ", ".join(shown(k) for k in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise RequestError(f"Unknown option {named}; the options you may set are {', '.join(ALLOWED_KEYS)}.")
    profile = None
    if "profile" in options:
        profiles = profiles or {}
        profile = _one_of("profile", options["profile"], profiles)
        if set(options) - {"profile", "account", "reservation"}:
            raise RequestError(
                "A profile sets the resources itself: send 'profile' alone "
                "(with 'account' or 'reservation' if you need them), or the fields without it."
            )
        options = {**profiles[profile], **{k: v for k, v in options.items() if k != "profile"}}
    site = sites[_one_of("site", options.get("site", default_site), sites)]
    part = site.partitions[_one_of("partition", options.get("partition", next(iter(site.partitions))), site.partitions)]
    gpus, cpus, memory_gb = _resources(options, site, part)
    return JobRequest(
        site=site.name,
        partition=part.name,
        gpus=gpus,
        cpus=cpus,
        memory_gb=memory_gb,
        hours=_hours(options.get("hours", 1), part.max_hours),
        account=_account(options, site, user),
        environment=_one_of("environment", options.get("environment", site.default_environment), site.environments),
        reservation=_reservation(options, site, user),
        profile=profile,
        whole_node=part.whole_node,
    )


def resources_for(options: Mapping, site: Site, part) -> tuple[int, int, int]:
    """The GPUs, cores and GB a valid request of `options` gets on `part` (the defaults filled in)."""
    return _resources(options, site, part)
