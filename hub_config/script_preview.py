"""`aifa-workbench render-script`: the batch script the hub would submit for a request, made by the
hub's own spawner (WorkbenchSlurmSpawner: apply_job_request, get_env, batch_script) configured as
jupyterhub_config.py configures it. No site is asked anything and nothing is submitted: where the
spawner would ask a site (the user's accounts, reservations, budget), the admin's word answers."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from tornado import web
from traitlets.config import Config

from aifa_workbench.spawners import submission
from aifa_workbench.spawners.slurm import WorkbenchSlurmSpawner

# The random part of a remote job's env file name, which the hub draws at each submission.
ENV_FILE_PLACEHOLDER = "X" * 16


class PreviewError(Exception):
    """The script cannot be rendered; the message says why, for the admin."""


class AdminsWord:
    """A site's answers as render-script takes them: the account and reservation the admin gave
    are the user's own, and no budget binds them (the hub checks both at each spawn)."""

    def __init__(self, account: str, reservation: str):
        self.account, self.reservation = account, reservation

    async def user_accounts(self, username, site_user=None) -> tuple[str, ...]:
        return (self.account,) if self.account else ()

    async def reservations(self, username, accounts, wanted=None, site_user=None) -> tuple[str, ...]:
        return (self.reservation,) if self.reservation else ()

    async def budgets(self, username, accounts, site_user=None, fresh=False) -> dict:
        return {}

    async def project_file(self, user, path, account) -> str:
        return "{}"  # a billing file that says nothing: no budget


class PreviewSpawner(WorkbenchSlurmSpawner):
    """The hub's spawner with the admin's word for its sites' answers, and the server JupyterHub
    would have made for it (its URL prefix is in the job's environment)."""

    account = ""  # the admin's word (AdminsWord)
    reservation = ""
    home = ""  # the user's home as the admin gives it (--home), else what the registry or this host knows
    registry = None  # the hub's site accounts (hub_config.site_accounts), with the homes sites gave
    service_prefix = "/"

    def facts(self, site_name: str) -> AdminsWord:
        return AdminsWord(self.account or self.sites[site_name].account_example, self.reservation)

    def control_of(self, site_name: str) -> AdminsWord:
        # admission reads a budget through it (LUMI's billing file); nothing is ever submitted
        return self.facts(site_name)

    @property
    def server(self):
        return SimpleNamespace(base_url=self.service_prefix, port=0)

    def user_home(self) -> str:
        if self.home:
            return self.home
        try:
            home = super().user_home()
        except KeyError:
            raise PreviewError(
                f"{self.site_username()} has no account on this host: give their home with --home."
            ) from None
        if not home and self.registry is not None:  # the home the site gave at a start, as the hub kept it
            home = self.registry.home(self.user.name, self.site_name, self.site_username())
        if not home:
            raise PreviewError(
                f"The home of {self.site_username()} on {self.sites[self.site_name].title} is not known yet "
                "(the hub reads it from the site at their first start there): give it with --home."
            )
        return home


def admins_site_users(site_users: dict, user: str, site, account: str) -> dict:
    """site_users with `user` on `site` as the admin says: their site username (from site_users, else
    their hub name) with `account` (else the accounts site_users gives them, else the catalogue's example)."""
    entry = site_users.get(user, {}).get(site.name, {})
    accounts = [account] if account else list(entry.get("accounts") or [site.account_example])
    mine = {**site_users.get(user, {}), site.name: {"username": entry.get("username") or user, "accounts": accounts}}
    return {**site_users, user: mine}


def preview_spawner(
    traits: dict, user: str, options: dict, bind_url: str, https: bool, home: str = ""
) -> PreviewSpawner:
    """The spawner JupyterHub would make for `user`'s default server, configured with `traits`
    (hub_config.spawner_settings), on a hub at `bind_url`; the admin's account and reservation
    in `options` taken as the user's own."""
    prefix = urlsplit(bind_url).path or "/"
    hub_port = traits.get("hub_port", WorkbenchSlurmSpawner.hub_port.default_value)
    hub = SimpleNamespace(
        api_url=f"http://127.0.0.1:{hub_port}{prefix}hub/api",
        base_url=f"{prefix}hub/",
        public_host=urlsplit(bind_url).netloc,
    )
    name = quote(user, safe="")
    hub_user = SimpleNamespace(name=user, escaped_name=name, url=f"{prefix}user/{name}/", db=None, groups=[])
    # cookie_options: JupyterHub gives each spawner its tornado_settings' (jupyterhub_config.py)
    spawner = PreviewSpawner(
        config=Config({"WorkbenchSlurmSpawner": traits}),
        user=hub_user,
        hub=hub,
        cookie_options={"secure": True} if https else {},
    )
    spawner.account, spawner.reservation = options.get("account", ""), options.get("reservation", "")
    spawner.home, spawner.service_prefix = home, hub_user.url
    site_name = options.get("site", spawner.default_site)
    site = spawner.sites.get(site_name) if isinstance(site_name, str) else None  # else admission refuses it
    if site is not None and site.transport != "local":
        spawner.site_users = admins_site_users(dict(spawner.site_users), user, site, spawner.account)
    return spawner


async def render(spawner: PreviewSpawner, options: dict) -> str:
    """The batch script the spawner submits for `options` (WorkbenchSlurmSpawner.submit_batch_script),
    a remote job's env file named with ENV_FILE_PLACEHOLDER."""
    try:
        await spawner.apply_job_request(options)
    except web.HTTPError as refusal:
        raise PreviewError(refusal.log_message) from None
    env = spawner.get_env()
    env_file = submission.env_file_path(spawner.user_home(), ENV_FILE_PLACEHOLDER) if spawner.remote else None
    if spawner.remote and spawner.registry is not None:  # the project's folders the site had at a start
        spawner.site_storage = spawner.registry.storage(
            spawner.user.name, spawner.site_name, spawner.site_username(), spawner.job_request.account
        )
    return spawner.batch_script(env, env_file)
