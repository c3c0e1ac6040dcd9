"""Turn a user's `user_options` into a typed job request, or refuse them with a sentence.

This is the only path from what a user sends to what reaches a batch script: values are
checked against allowlists and bounds here and nowhere else, and nothing unchecked survives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


class RequestError(ValueError):
    """A user's request is not acceptable; the message is a sentence for the user."""


@dataclass(frozen=True)
class PartitionLimits:
    name: str
    max_gpus: int
    max_hours: int


@dataclass(frozen=True)
class JobRequest:
    partition: str
    gpus: int
    hours: int


ALLOWED_KEYS = ("partition", "gpus", "hours")


def _bounded_int(options: Mapping, key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    # bool is an int subclass: refuse it, and refuse strings, floats and the like.
    if type(value) is not int:
        raise RequestError(f"'{key}' must be a whole number from {low} to {high}.")
    if not low <= value <= high:
        raise RequestError(f"'{key}' must be from {low} to {high}; {value} is out of range.")
    return value


def parse_job_request(
    options: Mapping,
    partitions: Mapping[str, PartitionLimits],
    default_partition: str,
    default_hours: int = 1,
) -> JobRequest:
    """Validate `options` (a user's `user_options`) and return a JobRequest.

    Raises RequestError with a sentence naming the field and the allowed values.
    """
    if not isinstance(options, Mapping):
        raise RequestError("The server options must be a JSON object.")
    unknown = sorted(str(k) for k in options if k not in ALLOWED_KEYS)
    if unknown:
        raise RequestError(
            f"Unknown option {', '.join(repr(k) for k in unknown)}; "
            f"the options you may set are {', '.join(ALLOWED_KEYS)}."
        )
    partition = options.get("partition", default_partition)
    if not isinstance(partition, str) or partition not in partitions:
        raise RequestError(
            f"'partition' must be one of {', '.join(sorted(partitions))}; "
            f"{partition!r} is not one of them."
        )
    limits = partitions[partition]
    gpus = _bounded_int(options, "gpus", 0, 0, limits.max_gpus)
    hours = _bounded_int(options, "hours", min(default_hours, limits.max_hours), 1, limits.max_hours)
    return JobRequest(partition=partition, gpus=gpus, hours=hours)
