"""Who a federated login is: the hub user keyed on the provider's `sub`, and the groups its
entitlement claims name. Pure functions; hub_config/oidc.py applies them.

A person's hub name comes from the immutable `sub` (never from an email or a display name, which
change and can be chosen): the name the admins gave that sub (settings `oidc.people`), otherwise
`u-` and 16 hex digits of the sub's hash, the same at every login.
"""
from __future__ import annotations

import hashlib
import re

GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def normal_sub(sub) -> str:
    """MyAccessID compares identifiers case-insensitively."""
    return sub.strip().lower() if isinstance(sub, str) else ""


def hub_name(sub: str, people: dict[str, str]) -> str:
    """The hub user of `sub`: the admins' name for it, or a name derived from it alone."""
    sub = normal_sub(sub)
    return people.get(sub) or "u-" + hashlib.sha256(sub.encode()).hexdigest()[:16]


def sub_accepted(sub, pattern: str, refused: tuple[str, ...]) -> bool:
    """An identifier of the provider's form, and not one of its monitoring accounts."""
    sub = normal_sub(sub)
    return bool(sub) and len(sub) <= 255 and bool(re.fullmatch(pattern, sub)) and sub not in refused


def groups_from_entitlements(entitlements, prefix: str) -> set[str]:
    """Hub groups from AARC-G002 entitlement URNs under `prefix` (…:group:<namespace>:):

    `<prefix>course-ws01#myaccessid.org` gives `course-ws01`;
    `<prefix>course-ws01:role=instructor#…` gives `course-ws01` and `course-ws01-instructor`;
    a subgroup `<prefix>lumi:project_465000123` gives `lumi-project_465000123`.
    Anything else (other namespaces, names the hub cannot hold) gives nothing."""
    if isinstance(entitlements, str):
        entitlements = [entitlements]
    if not isinstance(entitlements, list) or not prefix:
        return set()
    groups = set()
    for value in entitlements:
        if not isinstance(value, str) or not value.startswith(prefix):
            continue
        path = value[len(prefix):].split("#", 1)[0]
        path, _, role = path.partition(":role=")
        group = path.replace(":", "-").lower()
        if not GROUP_NAME.match(group):
            continue
        groups.add(group)
        role_group = f"{group}-{role.lower()}"
        if role and GROUP_NAME.match(role_group):
            groups.add(role_group)
    return groups
