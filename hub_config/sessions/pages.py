"""The hub's pages of sessions: a card per server on the home page and the waiting page
(template variable `workbench_sessions`), and the admins' page of everyone's (/hub/sessions).

Cards read what the hub already knows (the queue monitor's last word, the spawner's kept
state): rendering a page never runs a Slurm command."""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

PATH = "/sessions"
STATE_LABELS = {
    "submitting": "Submitting",
    "queued": "Queued",
    "starting": "Starting",
    "running": "Running",
    "stopping": "Stopping",
    "ended": "Ended",
}


def _kept_state(spawner) -> dict:
    orm_spawner = getattr(spawner, "orm_spawner", spawner)
    state = getattr(orm_spawner, "state", None)
    return state if isinstance(state, dict) else {}


def session_rows(user) -> list[dict]:
    """One row per server of `user`: its live card, or what ended last (either may be None)."""
    if user is None:
        return []
    rows = []
    for spawner in user.all_spawners():
        live = spawner.session_card() if hasattr(spawner, "session_card") else None
        ended = (
            getattr(spawner, "last_session", None)
            if hasattr(spawner, "session_card")
            else _kept_state(spawner).get("last_session")
        )
        if live is None and not isinstance(ended, dict):
            ended = None
        rows.append(
            {
                "name": spawner.name,
                "user": user.name,
                "live": live,
                "ended": None if live else ended,
                "active": bool(getattr(spawner, "active", False)),
                "url": user.server_url(spawner.name),
                "api": f"users/{user.escaped_name}/servers/{spawner.name}"
                if spawner.name
                else f"users/{user.escaped_name}/server",
            }
        )
    return rows


def template_vars(product: dict) -> dict:
    # JupyterHub calls a callable value with the reader: hand the templates the function itself, so
    # that a page about another user (an admin's view of their waiting page) shows that user's rows
    return {
        "workbench_sessions": lambda _reader: session_rows,
        "workbench_product": product,
        "workbench_state_labels": STATE_LABELS,
    }


class SessionsAdminHandler(BaseHandler):
    """Every user's sessions, for the hub's admins (the same cards as each user's home page)."""

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        # a role limited to some servers (a course's instructors: its sessions) sees those only
        can_read = self.get_scope_filter("read:servers")
        rows = []
        for orm_user in self.db.query(orm.User).order_by(orm.User.name):
            readable = {
                name for name, orm_spawner in orm_user.orm_spawners.items() if can_read(orm_spawner, kind="server")
            }
            if readable:
                rows += [
                    row
                    for row in session_rows(self.users[orm_user])
                    if row["name"] in readable and (row["live"] or row["ended"])
                ]
        self.finish(await self.render_template("sessions.html", session_list=rows))


def handlers() -> list[tuple]:
    return [(PATH, SessionsAdminHandler)]
