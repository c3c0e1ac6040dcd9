"""The public key line a user gives a site."""
from __future__ import annotations


def public_key_line(site, key: str, egress) -> str:
    """JUPITER (JuDoor) wants a from= clause naming where the logins come from: the hub's addresses."""
    if site.key_from_clause and egress:
        return f'from="{",".join(egress)}" {key}'
    return key
