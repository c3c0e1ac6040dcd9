"""Who a federated login is: the hub user keyed on the provider's `sub`, and the groups its
entitlement claims name. Pure functions; hub_config/oidc.py applies them.

A person's hub name comes from the immutable `sub` (never from an email or a display name, which
change and can be chosen): the name the admins gave that sub (settings `oidc.people`), otherwise
`u-` and 16 hex digits of the sub's hash, the same at every login.
"""

from __future__ import annotations

import hashlib
import re

GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._=-]{0,63}$")
SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # one level of a group path: no "." nor "="


def normal_sub(sub, fold_case: bool = False) -> str:
    """The identifier as compared: MyAccessID's are case-insensitive (fold_case), others not."""
    if not isinstance(sub, str):
        return ""
    return sub.strip().lower() if fold_case else sub.strip()


def hub_name(sub: str, people: dict[str, str], fold_case: bool = False) -> str:
    """The hub user of `sub`: the admins' name for it, or a name derived from it alone."""
    sub = normal_sub(sub, fold_case)
    return people.get(sub) or "u-" + hashlib.sha256(sub.encode()).hexdigest()[:16]


def sub_accepted(sub, pattern: str, refused: tuple[str, ...], fold_case: bool = False) -> bool:
    """An identifier of the provider's form, and not one of its monitoring accounts."""
    sub = normal_sub(sub, fold_case)
    return bool(sub) and len(sub) <= 255 and bool(re.fullmatch(pattern, sub)) and sub not in refused


def groups_from_entitlements(entitlements, prefix: str, authorities: tuple[str, ...] = ()) -> set[str]:
    """Hub groups from AARC-G002 entitlement URNs under `prefix` (…:group:<namespace>:), asserted
    by one of `authorities` (any, when none are named):

    `<prefix>ws01#myaccessid.org` gives `ws01`;
    `<prefix>ws01:role=instructor#…` gives `ws01` and `ws01=instructor`;
    a subgroup `<prefix>lumi:project_465000123` gives `lumi.project_465000123`.
    Levels are joined by "." and a role follows "=", neither of which a level may hold, so no
    subgroup or role can spell another group's name. Anything else gives nothing."""
    if isinstance(entitlements, str):
        entitlements = [entitlements]
    if not isinstance(entitlements, list) or not prefix:
        return set()
    groups = set()
    for value in entitlements:
        if not isinstance(value, str) or not value.startswith(prefix):
            continue
        path, _, authority = value[len(prefix) :].partition("#")
        if authorities and authority not in authorities:
            continue
        path, _, role = path.partition(":role=")
        levels = path.lower().split(":")
        if not all(SEGMENT.match(level) for level in levels):
            continue
        group = ".".join(levels)
        if not GROUP_NAME.match(group):
            continue
        groups.add(group)
        if role and SEGMENT.match(role.lower()) and GROUP_NAME.match(f"{group}={role.lower()}"):
            groups.add(f"{group}={role.lower()}")
    return groups
