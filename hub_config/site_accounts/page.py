"""The admins' page of site accounts (/hub/site-accounts) and its REST API
(/hub/api/site-accounts/<user>): who each person is on each remote site, and their projects there.

GET  /hub/api/site-accounts/<user>          {site: {username, accounts, source}}   (read:users)
PUT  /hub/api/site-accounts/<user>          {site: {username, accounts}}           (users)
DELETE /hub/api/site-accounts/<user>/<site>                                         (users)
"""

from __future__ import annotations

import json

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from aifa_workbench.hub_config.runtime import Workbench, WorkbenchHandler
from aifa_workbench.hub_config.site_accounts.registry import SiteAccountError, change_refused, checked_entry

PATH = "/site-accounts"
USER = r"([a-z][a-z0-9_-]{0,31})"
SITE = r"([a-z][a-z0-9_-]{0,31})"


def running_jobs(user) -> dict[str, str]:
    """{site: job id} of the user's servers that run on a remote site now."""
    jobs = {}
    for spawner in user.spawners.values() if user is not None else ():
        site, job_id = getattr(spawner, "job_site", ""), getattr(spawner, "job_id", "")
        if site and job_id and spawner.active:
            jobs[site] = job_id
    return jobs


def refusal_of_change(workbench: Workbench, user, name: str, site: str, new: dict | None) -> str | None:
    current = workbench.site_accounts.get(name, {}).get(site)
    remote = workbench.remote_sites
    title = remote[site].title if site in remote else site
    return change_refused(name, title, running_jobs(user).get(site), current, new)


def user_accounts(workbench: Workbench, user: str) -> dict:
    registry, remote = workbench.site_accounts, workbench.remote_sites
    return {
        site: {**entry, "source": registry.source(user, site)}
        for site, entry in registry.get(user, {}).items()
        if site in remote
    }


class SiteAccountsAPIHandler(WorkbenchHandler, APIHandler):
    @needs_scope("read:users")
    async def get(self, user_name):
        self.finish(json.dumps(user_accounts(self.workbench, user_name)))

    @needs_scope("users")
    async def put(self, user_name):
        if orm.User.find(self.db, user_name) is None:
            raise web.HTTPError(404, f"There is no user {user_name} on this hub.")
        body = self.get_json_body()
        if not isinstance(body, dict) or not body:
            raise web.HTTPError(400, "Send {site: {username, accounts}}.")
        try:
            entries = {
                site: checked_entry(site, self.workbench.remote_sites, value.get("username"), value.get("accounts", []))
                for site, value in body.items()
                if isinstance(value, dict)
            }
        except SiteAccountError as e:
            raise web.HTTPError(400, str(e)) from None
        if len(entries) != len(body):
            raise web.HTTPError(400, "Each site needs an object {username, accounts}.")
        user = self.find_user(user_name)
        for site, entry in entries.items():
            refused = refusal_of_change(self.workbench, user, user_name, site, entry)
            if refused:
                raise web.HTTPError(409, refused)
        for site, entry in entries.items():
            self.workbench.site_accounts.set_kept(user_name, site, entry)
        self.log.info("Site accounts of %s set by %s: %s", user_name, self.current_user.name, ", ".join(entries))
        self.finish(json.dumps(user_accounts(self.workbench, user_name)))


class SiteAccountAPIHandler(WorkbenchHandler, APIHandler):
    @needs_scope("users")
    async def delete(self, user_name, site):
        registry = self.workbench.site_accounts
        refused = refusal_of_change(
            self.workbench, self.find_user(user_name), user_name, site, registry.fallback(user_name, site)
        )
        if refused:
            raise web.HTTPError(409, refused)
        if not registry.remove_kept(user_name, site):
            raise web.HTTPError(404, "The admins set no account of this user on this site.")
        self.set_status(204)
        self.finish()


class SiteAccountsPageHandler(WorkbenchHandler, BaseHandler):
    """Every person and their accounts on each remote site, with a form to set one."""

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self, message: str = "", failed: bool = False):
        can_read = self.get_scope_filter("read:users")
        names = {u.name for u in self.db.query(orm.User) if can_read(u, kind="user")}
        rows = [{"user": name, "accounts": user_accounts(self.workbench, name)} for name in sorted(names)]
        self.finish(
            await self.render_template(
                "site_accounts.html", rows=rows, sites=self.workbench.remote_sites, message=message, failed=failed
            )
        )

    @web.authenticated
    @needs_scope("admin-ui")
    async def post(self):
        user = self.get_body_argument("user", "")[:64]
        site = self.get_body_argument("site", "")[:64]
        orm_user = orm.User.find(self.db, user)
        if orm_user is None:
            return await self.get(f"There is no user {user!r} on this hub.", True)
        if not self.get_scope_filter("users")(orm_user, kind="user"):
            raise web.HTTPError(403, "You may not change this user's accounts.")
        workbench, registry = self.workbench, self.workbench.site_accounts
        try:
            hub_user = self.users[orm_user]
            if self.get_body_argument("action", "save") == "remove":
                refused = refusal_of_change(workbench, hub_user, user, site, registry.fallback(user, site))
                if refused:
                    return await self.get(refused, True)
                registry.remove_kept(user, site)
                message = f"The admins' account of {user} on {site} is removed."
            else:
                entry = checked_entry(
                    site,
                    workbench.remote_sites,
                    self.get_body_argument("username", "")[:64],
                    self.get_body_argument("accounts", "")[:4000],
                )
                refused = refusal_of_change(workbench, hub_user, user, site, entry)
                if refused:
                    return await self.get(refused, True)
                registry.set_kept(user, site, entry)
                message = f"{user} is {entry['username']} on {workbench.remote_sites[site].title}."
        except SiteAccountError as e:
            return await self.get(str(e), True)
        self.log.info("Site account of %s on %s changed by %s", user, site, self.current_user.name)
        await self.get(message)


def handlers() -> list[tuple]:
    return [
        (PATH, SiteAccountsPageHandler),
        (r"/api/site-accounts/" + USER, SiteAccountsAPIHandler),
        (r"/api/site-accounts/" + USER + "/" + SITE, SiteAccountAPIHandler),
    ]
