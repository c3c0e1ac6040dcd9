"""The hub's page of a user's SSH keys for the remote sites (/hub/site-keys): per site the
user's name there, the public key the hub holds for them (made on first view), what the site wants
done with it, and a Test connection button (POST /hub/site-keys/<site>/test, answered in JSON)."""

from __future__ import annotations

import json

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from aifa_workbench.hub_config.runtime import Workbench, WorkbenchHandler
from aifa_workbench.hub_config.site_keys.store import public_key_line
from aifa_workbench.hub_config.spawner_settings import KEYS_PAGE_PATH
from aifa_workbench.sites.errors import SiteError

PATH = KEYS_PAGE_PATH


def site_rows(workbench: Workbench, user: str) -> list[dict]:
    rows = []
    identities = workbench.identities
    for site in workbench.remote_sites.values():
        username = identities.site_username(user, site.name) if identities else None
        key = identities.key_store.public_key(user, site.name) if identities and username else ""
        entry = identities.site_account(user, site.name) if identities else {}
        short = site.title.split(" (")[0].split(" ·")[0]
        rows.append(
            {
                "name": site.name,
                "title": site.title,
                "username": username,
                "accounts": list(entry.get("accounts", ())),
                "missing": ""
                if username
                else (
                    f"You have no {short} account yet, or the workbench does not know it: get one from "
                    f"{short} (your project's manager adds you to a project there), then ask "
                    f"{workbench.support} to add your {short} username."
                ),
                "key": public_key_line(site, key, workbench.hub_egress) if key else "",
                "needs_egress": site.key_from_clause and not workbench.hub_egress,
                "instructions": site.key_instructions,
            }
        )
    return rows


class SiteKeysHandler(WorkbenchHandler, BaseHandler):
    @web.authenticated
    async def get(self):
        html = await self.render_template("site_keys.html", rows=site_rows(self.workbench, self.current_user.name))
        self.finish(html)


class SiteKeyTestHandler(WorkbenchHandler, BaseHandler):
    @web.authenticated
    async def post(self, site_name: str):
        site = self.workbench.remote_sites.get(site_name)
        if site is None:
            raise web.HTTPError(404, "No such remote site.")
        user = self.current_user.name
        try:
            await self.workbench.controls.of(site).ping(user)
        except SiteError as e:
            self.log.info("Connection test of %s to %s: %s", user, site_name, e.detail or e)
            self.finish(json.dumps({"ok": False, "message": e.sentence}))
            return
        self.finish(
            json.dumps(
                {
                    "ok": True,
                    "message": f"The workbench logged in to {site.title} as "
                    f"{self.workbench.identities.site_username(user, site_name)} "
                    "and Slurm answered.",
                }
            )
        )


def handlers() -> list[tuple]:
    return [(PATH, SiteKeysHandler), (PATH + r"/([a-z][a-z0-9_-]{0,31})/test", SiteKeyTestHandler)]
