"""WorkbenchSlurmSpawner: JupyterLab as a Slurm job of the user, on the site the user chose.

Taken from batchspawner's SlurmSpawner: its state fields (`job_id`, `job_status`) and how they are
kept across hub restarts (get_state, load_state, clear_state), and its API route (whose handler
job_callback replaces). Replaced, all of it: start, poll, stop and progress (on the site's queue
monitor), submission and every Slurm query (through the site's job control, argv lists only),
the merge of `user_options` into template variables (a JobRequest validated against the site
catalogue instead), and errors users can read. batchspawner's own settings (req_*, batch_*,
state_*, exec_prefix, ...) therefore do nothing here, and the hub warns when one is set.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import os
import pwd
import socket
import re
import secrets
import time
from pathlib import Path

from batchspawner import SlurmSpawner
from jinja2 import Environment, FunctionLoader, StrictUndefined
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Dict, Float, Integer, List, Unicode, default

from aifa_workbench.model.catalogue import estimate_cost, load_catalogue
from aifa_workbench.model import budget as budget_mod, course as model_course, session as session_mod
from aifa_workbench.hub_config import courses as courses_mod
from aifa_workbench.model.request import JobRequest, RequestError, UserContext, parse_job_request, shown
from aifa_workbench.sites.commands import bounded
from aifa_workbench.sites.control import JobControl
from aifa_workbench.sites.errors import CredentialRefused, HostKeyMismatch, SiteError
from aifa_workbench.sites import gateway, reach, runtime, socket_owner
from aifa_workbench.sites.tunnel_client import TunnelDaemonError, ask as ask_tunnel_daemon
from aifa_workbench.sites.registry import current_identities, site_control
from aifa_workbench.sites.slurm_cli import JobInfo, describe_reason

from . import profiles as profiles_mod
from .background import in_background
from .queue_monitor import QueueMonitor
from .server_identity import own_server_identity
from .server_token import is_record, limit_token, revoke_token
from .script import (ScriptContext, render_batch_script, render_env_file, runtime_paths, server_launch_argv,
                     template_source)
from .slurm_facts import SlurmFacts

# How long a job's own end report waits for Slurm to confirm it: longer than the SSH runner's
# longest pause between logins (30 s), so an end reported just after a login node came back is
# confirmed by the first login after the pause, not at JupyterHub's next poll of the server.
END_CONFIRM_SECONDS = 60.0

_FORM = Environment(loader=FunctionLoader(template_source), undefined=StrictUndefined, autoescape=True)


# The hub's own reasons to stop a server: the idle culler (hub_config/idle_culler), a course's end
# (hub_config/courses), an address another account took (spawners/tunnel_reconcile).
HUB_STOP_REASONS = ("idle", "course_ended", "tunnel_taken")


class SpawnError(RuntimeError):
    """A spawn failed for a reason the user should read; JupyterHub shows `jupyterhub_message`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message


_WARNED: set[str] = set()


def _warn_once(log, message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def user_error(message: str) -> web.HTTPError:
    """HTTP 400 whose sentence JupyterHub shows as is (REST `message`, spawn form, spawn page)."""
    error = web.HTTPError(400, message)
    error.jupyterhub_message = message
    return error


_UNPRINTABLE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")   # terminal escapes first


def output_tail(text: str, lines: int, line_chars: int, cut_at_start: bool = False) -> str:
    """The last `lines` lines of a job's output, each at most `line_chars` characters, with
    terminal escapes and control characters removed. `cut_at_start`: the text is the end of a
    longer file, so its first line is a fragment and is dropped."""
    kept = text.splitlines()
    if cut_at_start and len(kept) > 1:
        kept = kept[1:]
    shown = []
    for line in kept[-lines:]:
        line = _UNPRINTABLE.sub("", line.replace("\t", "    ")).rstrip()
        shown.append(line if len(line) <= line_chars else line[:line_chars] + f"… ({len(line) - line_chars} more characters)")
    return "\n".join(shown).strip("\n")


def export_names(env: dict) -> tuple[str, ...]:
    """The environment the job inherits: the hub's JUPYTERHUB_* variables and nothing else."""
    return tuple(sorted(n for n in env if n.startswith("JUPYTERHUB_") or n == "JPY_API_TOKEN"))


def ignored_batchspawner_settings(config) -> list[str]:
    """batchspawner settings an admin set that this spawner does not use (it replaces the code
    that read them): named at hub start instead of silently doing nothing."""
    inherited = set(SlurmSpawner.class_trait_names(config=True)) - set(Spawner.class_trait_names(config=True))
    found = set()
    for section in ("BatchSpawnerBase", "SlurmSpawner", "WorkbenchSlurmSpawner"):
        found |= inherited & set(config.get(section, {}))
    return sorted(found)


@functools.lru_cache(maxsize=8)
def cached_catalogue(directory: str, enabled: tuple[str, ...]):
    return load_catalogue(directory or None, enabled)


# Projects' billing files read on remote sites: {(site, user, project): (expires, Budget | None)}
_PROJECT_BUDGETS: dict = {}
PROJECT_BUDGET_TTL = 300.0


class WorkbenchSlurmSpawner(SlurmSpawner):
    catalogue_dir = Unicode("", help="Directory of site files (*.yaml); empty: the bundled catalogue.").tag(config=True)
    enabled_sites = List(Unicode(), default_value=["local"], help="Sites users may start servers on.").tag(config=True)
    default_site = Unicode("local", help="Site used when a request names none.").tag(config=True)
    site_users = Dict(
        help="Who each hub user is on each site: {user: {site: {'username': ..., 'accounts': [...]}}} "
             "(the settings' site_users). Sites with accounts_from: settings take the accounts from here.",
    ).tag(config=True)
    venv_dir = Unicode(
        "/opt/aifa-workbench/venv",
        help="Virtual environment, readable by job users, whose jupyterhub-singleuser the job runs.",
    ).tag(config=True)
    slurm_bin = Unicode("/usr/bin", help="Directory of sbatch, squeue, scancel, sacctmgr, scontrol.").tag(config=True)
    accounts_cache_seconds = Float(
        300, help="Seconds a user's Slurm accounts (sacctmgr, ~0.2 s a query) are reused between spawns; 0: never.",
    ).tag(config=True)
    command_timeout = Float(30, help="Seconds before a Slurm command is given up on.").tag(config=True)
    queue_interval = Float(
        30, help="Seconds between the site's queue polls while every tracked job runs (one squeue for all jobs).",
    ).tag(config=True)
    queue_fast_interval = Float(
        1, help="Seconds between queue polls while a tracked job waits to start, or Slurm does not answer.",
    ).tag(config=True)
    walltime_warnings_minutes = List(
        Integer(), default_value=[10, 2],
        help="Minutes before a job's time limit at which JupyterLab warns the user and saves every open "
             "notebook (after the last one it keeps saving every 10 s until the end).",
    ).tag(config=True)
    log_tail_lines = Integer(15, help="Lines of a job's output shown when it dies before JupyterLab answers.").tag(config=True)
    log_tail_bytes = Integer(
        16384, help="Bytes read from the end of a job's output for those lines (a job may write gigabytes, "
                    "or one line of megabytes: only this much is ever read).",
    ).tag(config=True)
    log_tail_line_chars = Integer(300, help="Characters shown of each of those lines.").tag(config=True)
    keys_page_url = Unicode("", help="The hub's page of each user's keys for the remote sites, named in "
                                      "sentences about a refused or missing key.").tag(config=True)
    hub_port = Integer(8081, help="The hub's API port, for the sites' reach.hub_url ({hub_port}).").tag(config=True)
    runtime_wheelhouse = Unicode(
        "/opt/aifa-workbench/wheelhouse",
        help="The job runtime this hub's code needs on remote sites (its id is checked before a spawn).",
    ).tag(config=True)
    hub_id = Unicode(
        "hub", help="This hub's id in its job names (aifa-wb-<hub id>-<user>): two hubs on one cluster "
                    "then never take each other's jobs for orphans. Lowercase letters and digits, at most 12.",
    ).tag(config=True)
    tunnel_gateway = Dict(
        {}, help="The hub's tunnel gateway, for sites in reverse reach (LUMI): port, user, ports (the "
                 "range granted), host_key_file, grants_dir (the settings' tunnel_gateway), and ca_key_file.",
    ).tag(config=True)
    tunnel_open_seconds = Float(
        60, help="How long a reverse-reach job may take to open its tunnel once JupyterLab listens.",
    ).tag(config=True)
    tunnel_daemon_socket = Unicode(
        "", help="The unix socket of the tunnel daemon (`aifa-workbench tunneld`), for sites in forward "
                 "reach (JUPITER).",
    ).tag(config=True)
    support_contact = Unicode(
        "your trainer, or the BE-AIFA support desk",
        help="Whom users ask (the settings' support_contact), named where the form cannot help them.",
    ).tag(config=True)
    personal_named_servers = Integer(
        0, help="How many named servers of their own a user may have (the settings' named_servers_per_user); "
                "a course's session is a named server apart (course-<id>), whatever this says.",
    ).tag(config=True)
    job_request = None
    _job_hub_base: str | None = None   # forward reach: where this job calls the hub (the login node's forward)
    _job_hub_ca: str = ""              # forward reach: the CA the job trusts for the hub there
    _refused_form: dict | None = None  # the values of a form the hub refused, for the form shown again
    tunnel_grant: gateway.Grant | None = None   # reverse reach: the gateway port of the current job
    job_site = ""   # the site the current job runs on; kept in the hub's state across restarts
    api_token_record: dict | None = None   # which row the server's API token is (not the secret), kept likewise
    _port_reported: asyncio.Event | None = None
    started_at: float | None = None     # when the current job started running (epoch), kept likewise
    _submitted_at = 0.0                 # monotonic: when the current job was submitted
    _start_failed = False               # the current start raised (the hub stops the server next)
    # why the hub itself stops a server, when it says so on the ended card (one of HUB_STOP_REASONS)
    stop_reason: str | None = None
    _reservation_start: float | None = None   # epoch: when the current job's reservation begins
    last_session: dict | None = None    # what ended last, why and what it cost (session.ended_summary)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ignored_batchspawner_settings(self.config):
            _warn_once(self.log, f"The setting {name!r} is batchspawner's and does nothing here: "
                                 "WorkbenchSlurmSpawner builds its Slurm commands from the site catalogue.")

    @default("env_keep")
    def _default_env_keep(self):
        return []

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, options: spawner.apply_job_request(options)

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    # --- catalogue, profiles, what the user may use ------------------------------------------
    @property
    def sites(self):
        return cached_catalogue(self.catalogue_dir, tuple(self.enabled_sites))

    @property
    def quick_start_profiles(self):
        return profiles_mod.quick_start_profiles(self.sites)

    def control_of(self, site_name: str) -> JobControl:
        return site_control(self.sites[site_name], self.slurm_bin, self.command_timeout)

    @property
    def control(self) -> JobControl:
        """The job control of the site of the current (or next) job."""
        return self.control_of(self.site_name)

    @property
    def site_name(self) -> str:
        return self.job_site or (self.job_request.site if self.job_request else self.default_site)

    def facts(self, site_name: str) -> SlurmFacts:
        return SlurmFacts(self.control_of(site_name), self.accounts_cache_seconds)

    async def user_context(self, wanted_reservation=None, wanted_site=None) -> UserContext:
        """What the user may use on each site. Raises SiteError when a site does not answer."""
        accounts, reservations = {}, {}
        name = self.user.name
        for site in self.sites.values():
            if site.accounts_from == "slurm":
                facts = self.facts(site.name)
                local = self.local_username() if site.transport == "local" else None
                accounts[site.name] = await facts.user_accounts(name, local)
                reservations[site.name] = await self._reservations(facts, accounts[site.name], wanted_reservation,
                                                                   local)
            else:
                entry = self._site_account(site.name)
                accounts[site.name] = tuple(entry.get("accounts", ()))
                if wanted_reservation and site.name == wanted_site and entry.get("username"):   # the site's word
                    reservations[site.name] = await self._reservations(
                        self.facts(site.name), accounts[site.name], wanted_reservation, entry["username"])
        return UserContext(accounts=accounts, reservations=reservations)

    async def _reservations(self, facts: SlurmFacts, accounts, wanted, site_user=None) -> tuple[str, ...]:
        """The user's reservations; when the controller does not answer, none (a request naming
        one is then refused with the reason; sbatch would be refused anyway)."""
        try:
            return await facts.reservations(self.user.name, accounts, wanted, site_user)
        except SiteError:
            if wanted:
                raise
            return ()

    async def apply_job_request(self, options):
        profiles = {p.slug: p.options for p in self.quick_start_profiles}
        course, options = self._course_options(options)
        try:
            wanted = options.get("reservation") if isinstance(options, dict) else None
            wanted_site = options.get("site", self.default_site) if isinstance(options, dict) else None
            request = parse_job_request(options, self.sites, await self.user_context(wanted, wanted_site),
                                        self.default_site, profiles)
        except RequestError as e:
            self.forget_user_options()
            if not self._from_the_form():     # the REST API's callers keep the options' names
                raise user_error(str(e)) from None
            self._refused_form = profiles_mod.refused_form(options, e.field)
            raise user_error(str(e.naming(profiles_mod.FORM_LABELS))) from None
        except SiteError as e:
            self.forget_user_options()
            self.log.warning("Spawn request of %s not checked: %s", self.user.name, e.detail or e)
            raise user_error(e.sentence) from None
        site = self.sites[request.site]
        if site.transport != "local" and site.reach is None:
            self.forget_user_options()
            raise user_error(f"Servers on {site.title} cannot be started from this hub: the site catalogue "
                             "does not say how the hub reaches it. Choose another site.")
        if course is None and courses_mod.course_of_account(request.account):
            self.forget_user_options()
            raise user_error(f"The project {request.account} is a course's: its sessions start from the course's "
                             "card on the start page, as the course set them.")
        await self._check_budget(request, options)
        self.job_request = request
        self.default_url = model_course.materials_url(course) if course else "/lab"

    def _course_options(self, options):
        """A course's locked profile: {"course": id} and nothing else, by a participant, in its window,
        as the named server course-<id> and no other (instructors' scopes name that server only)."""
        by_name = model_course.course_of_server(self.name)
        asked = options.get("course") if isinstance(options, dict) else None
        if by_name is None and asked is None:
            if self.name and self.personal_named_servers == 0:
                self.forget_user_options()
                raise user_error("This workbench runs one session per person (besides a course's): use your "
                                 "default server, or stop it first.")
            return None, options
        if by_name is not None and not options:      # the server's name alone says which course
            options, asked = {"course": by_name}, by_name
        if asked != by_name:
            self.forget_user_options()
            raise user_error("A course's session runs as a server of its own, named course- and the course's id: "
                             "start it from the course's card on the start page.")
        ident = asked
        course = courses_mod.BOOK.courses.get(ident) if courses_mod.BOOK and isinstance(ident, str) else None
        if course is None or self.user.name not in course.participants or len(options) != 1:
            self.forget_user_options()
            raise user_error("You can start a course's session only for a course you joined, and its settings are "
                             "the course's: join with your trainer's code first.")
        refusal = model_course.spawn_refusal(course, time.time(), courses_mod.CONFIG.last_start_minutes)
        if refusal:
            self.forget_user_options()
            raise user_error(refusal)
        return course, {**model_course.session_options(course), "hours": model_course.session_fits(course, time.time())}

    async def budgets(self, site, accounts, fresh: bool = False) -> dict:
        """What is left of each of the user's projects on `site` that has a budget (model.budget)."""
        if not site.budget or not accounts:
            return {}
        if site.budget["source"] == "lumi_project_info":
            if not self._site_account(site.name).get("username"):
                return {}            # no account there: nothing to read, and no login to try
            found = await asyncio.gather(*(self._project_budget(site, a, fresh) for a in accounts))
            return {a: b for a, b in zip(accounts, found) if b is not None}
        site_user = self.local_username() if site.transport == "local" else self._site_account(site.name).get("username")
        minutes = await self.facts(site.name).budgets(self.user.name, tuple(accounts), site_user, fresh=fresh)
        return budget_mod.budgets_from_slurm(minutes, site.budget.get("per_unit_hour", 1), site.billing_unit)

    async def _project_budget(self, site, account: str, fresh: bool):
        """One project's billing file on the site, read as the user at most every few minutes
        (the form asks on each view; LUMI updates the file far less often)."""
        key = (site.name, self.user.name, account)
        expires, budget = _PROJECT_BUDGETS.get(key, (0.0, None))
        if fresh or time.monotonic() >= expires:
            try:
                text = await self.control_of(site.name).project_file(self.user.name, site.budget["path"], account)
                budget, ttl = budget_mod.budget_from_lumi_file(text, account, site.billing_unit), PROJECT_BUDGET_TTL
            except SiteError as e:
                self.log.info("Budget of %s on %s not read: %s", account, site.name, e.detail or e)
                budget, ttl = None, PROJECT_BUDGET_TTL / 5
            _PROJECT_BUDGETS[key] = (time.monotonic() + ttl, budget)
        return budget

    async def _check_budget(self, request, options) -> None:
        """A request costing more than its project has left is refused, in words; when the site's
        accounting does not answer, Slurm still enforces the budget at sbatch."""
        site = self.sites[request.site]
        try:
            budget = (await self.budgets(site, [request.account], fresh=True)).get(request.account)
        except SiteError as e:
            self.log.warning("Budget of %s not checked: %s", request.account, e.detail or e)
            return
        part = site.partitions[request.partition]
        sentence = budget and budget_mod.refusal(
            budget, estimate_cost(part, request.gpus, request.cpus, request.memory_gb, request.hours))
        if sentence:
            self.forget_user_options()
            if self._from_the_form():
                self._refused_form = profiles_mod.refused_form(options, "hours")
            raise user_error(sentence)

    def _from_the_form(self) -> bool:
        """Whether this spawn was asked for by the spawn form's page (not the REST API)."""
        handler = getattr(self, "handler", None)
        return handler is not None and type(handler).__name__ == "SpawnHandler"

    def forget_user_options(self) -> None:
        """A refused request is not kept: JupyterHub stores options before they are checked and
        would answer a later empty request with them again."""
        self.user_options = {}
        if self.orm_spawner is not None:
            self.orm_spawner.user_options = {}
            self.user.db.commit()

    # --- the spawn form ------------------------------------------------------------------------
    async def render_options_form(self) -> str:
        try:
            context = await self.user_context()
        except SiteError as e:   # the form still shows; a spawn then says what is wrong
            self.log.warning("Spawn form of %s without live accounts: %s", self.user.name, e.detail or e)
            context = UserContext()
        # a course's reservation serves its card only (model.course), never a card of its own
        context = dataclasses.replace(context, reservations={
            name: tuple(r for r in found if not (courses_mod.BOOK and courses_mod.BOOK.is_course_reservation(r)))
            for name, found in context.reservations.items()})
        load, windows = {}, {}
        for name, site in self.sites.items():
            try:
                if site.transport == "local":
                    load[name] = await self.facts(name).partition_load(self.user.name)
                if context.reservations.get(name):
                    windows[name] = self._epoch_windows(site, await self.facts(name).reservation_windows(
                        self.user.name, context.reservations[name]))
            except SiteError as e:
                self.log.warning("No partition load or reservation windows for %s: %s", name, e.detail or e)
        data = profiles_mod.form_data(self.sites, self.quick_start_profiles, context.accounts,
                                      context.reservations, load, windows)
        for name, site in self.sites.items():
            try:
                found = await self.budgets(site, context.accounts.get(name, ()))
            except SiteError as e:
                self.log.warning("No budgets for %s on %s: %s", self.user.name, name, e.detail or e)
                found = {}
            data["sites"][name]["budgets"] = {account: b.to_dict() for account, b in found.items()}
        data["courses"] = profiles_mod.course_cards(courses_mod.BOOK.active_of(self.user.name)
                                                    if courses_mod.BOOK else [], self.sites)
        # a course's card starts its own named server (course-<id>), whichever server this form is for
        data["spawn_base"] = f"{self.hub.base_url}spawn/{self.user.escaped_name}/"
        data["support"] = self.support_contact
        data["refused"], self._refused_form = self._refused_form, None     # shown again once
        # else the form opens on the user's last choice (JupyterHub keeps the last options)
        data["remembered"] = None if data["refused"] else profiles_mod.refused_form(self.user_options or {}, None)
        return _FORM.get_template("spawn_form.html.j2").render(data=data, default_site=self.default_site)

    def options_from_form(self, formdata):
        return profiles_mod.options_from_form(formdata)

    # --- Slurm commands, as argv lists ---------------------------------------------------------
    async def run_command(self, cmd, input=None, env=None):
        raise NotImplementedError("shell command strings are not used; see aifa_workbench.sites.control")

    @property
    def remote(self) -> bool:
        return self.sites[self.site_name].transport != "local"

    def site_username(self) -> str:
        """The user's name on the job's site (the settings' site_users; on the local cluster their
        own, or the guest account a course gave them)."""
        if not self.remote:
            return self.local_username()
        return self._site_account(self.site_name).get("username") or self.user.name

    def local_username(self) -> str:
        identities = current_identities()
        return identities.local_username(self.user.name) if identities is not None else self.user.name

    def _site_account(self, site_name: str) -> dict:
        """{username, accounts} of the user on a site: the hub's registry (admins, the identity
        provider, the settings: hub_config.site_accounts) where the hub has one, else the trait."""
        identities = current_identities()
        users = identities.site_users if identities is not None else self.site_users
        return users.get(self.user.name, {}).get(site_name, {})

    def user_home(self) -> str:
        """The user's home on the job's site (where the job writes its output)."""
        home = self.sites[self.site_name].home_of(self.site_username())
        return home or pwd.getpwnam(self.site_username()).pw_dir

    def user_env(self, env):
        """batchspawner would add USER, HOME and SHELL from this host's passwd, which does not know
        most users (a course's participants run as guest accounts, others only on remote sites);
        the job never inherits them anyway (export_names), and its script sets HOME and USER."""
        return env

    def get_env(self):
        """Jobs of a remote site call the hub at the address their catalogue says (reach.hub_url)."""
        env = super().get_env()
        site = self.sites[self.site_name]
        if site.reach is None:
            return env
        local_base = self.hub.api_url.split("/hub/api")[0]
        site_base = self._job_hub_base if site.reach.mode == "forward" else site.reach.hub_base(self.hub_port)
        return {name: value.replace(local_base, site_base, 1) if name.startswith("JUPYTERHUB_") and
                isinstance(value, str) and value.startswith(local_base) else value for name, value in env.items()}

    def batch_script(self, env: dict, env_file: str | None = None) -> str:
        site = self.sites[self.job_request.site]
        paths = runtime_paths(site, self.job_request.environment, self.venv_dir)
        ctx = ScriptContext(
            username=self.site_username(),
            home=self.user_home(),
            venv_bin=paths.venv_bin,
            launch_argv=server_launch_argv(paths.server_bin, *self.get_args()),
            container_runtime=paths.container_runtime,
            container_binds=paths.container_binds,
            export_names=export_names(env),
            warn_minutes=tuple(self.walltime_warnings_minutes),
            catalogue_dir="" if self.remote else self.catalogue_dir,   # the runtime's own copy there
            slurm_bin=site.paths.slurm_bin if self.remote else self.slurm_bin,
            hub_id=self.hub_id,
            env_file=env_file,
            tunnel=self.reverse,
            hub_ca=self.forward,
            hub_user=self.user.name,
        )
        return render_batch_script(self.job_request, site, ctx)

    def _with_keys_page(self, error: SiteError) -> str:
        if isinstance(error, CredentialRefused) and self.keys_page_url and not isinstance(error, HostKeyMismatch):
            return f"{error.sentence} Your key for it, and how to give it to the site: {self.keys_page_url}"
        return error.sentence

    async def _check_runtime(self) -> None:
        """A remote site must run the job runtime of this hub's code."""
        site = self.sites[self.site_name]
        wanted = runtime.runtime_id(Path(self.runtime_wheelhouse))
        slugs = [self.job_request.environment] if site.environments[self.job_request.environment].container else []
        found = await runtime.installed_runtimes(self.control.runner, self.user.name, site.paths.runtime, slugs)
        if any(ident != wanted for ident in found.values()):
            self.log.error("Runtime on %s: %s, this hub's: %s", site.name, found, wanted)
            state = "outdated" if all(found.values()) else "missing"
            raise SpawnError(f"The workbench's software on {site.title} is {state}, "
                             "so your server was not started. Your workbench administrator fixes it with "
                             f"`aifa-workbench install-runtime {site.name}`; try again after that.")

    async def submit_batch_script(self):
        if self.job_request is None:
            await self.apply_job_request(self.user_options or {})
        username = self.user.name
        if self.forward:
            self._job_hub_base = await self._hub_api_forward()
        env = self.get_env()
        env_file = None
        try:
            if self.remote:
                await self._check_runtime()
                path = f"{self.user_home()}/.aifa-workbench/job-env-{secrets.token_hex(8)}"
                job_env = {n: env[n] for n in export_names(env)}
                if self.reverse:
                    job_env.update(self._grant_tunnel())
                if self.forward:
                    job_env["AIFA_WORKBENCH_HUB_CA_PEM"] = self._job_hub_ca
                env_file = (path, render_env_file(job_env))
            script = self.batch_script(env, env_file[0] if env_file else None)
            self.log.debug("Batch script for %s:\n%s", username, script)
            job_id = await self.control.submit(username, script, env, env_file=env_file)
        except SiteError as e:
            self.log.error("sbatch for %s on %s failed: %s", username, self.job_request.site, e.detail or e)
            self._revoke_tunnel()
            raise SpawnError(self._with_keys_page(e)) from None
        except BaseException:
            self._revoke_tunnel()
            raise
        self.job_id, self.job_site = job_id, self.job_request.site
        self._submitted_at = time.monotonic()
        # the token ends with the job at the latest: its walltime after it waited at most start_timeout
        self.api_token_record = limit_token(self.user.db, self.api_token,
                                            self.job_request.hours * 3600 + self.start_timeout)
        self.log.info("Submitted job %s for %s: %s", self.job_id, username, self.job_request)
        return self.job_id

    # --- state kept by the hub -------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.job_site:
            state["site"] = self.job_site
        if self.api_token_record is not None:
            state["api_token"] = self.api_token_record
        if self.tunnel_grant is not None:
            state["tunnel"] = self.tunnel_grant.as_state()
        if self.job_id and self.job_request is not None:     # for its card after a hub restart
            state["request"] = dataclasses.asdict(self.job_request)
        if self.started_at:
            state["started_at"] = self.started_at
        if self.last_session:
            state["last_session"] = self.last_session
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_site = state.get("site", "")
        record = state.get("api_token")
        self.api_token_record = record if is_record(record) else None
        self.tunnel_grant = gateway.Grant.from_state(state.get("tunnel"))
        if self.job_request is None and isinstance(state.get("request"), dict):
            try:
                self.job_request = JobRequest(**state["request"])
            except TypeError:
                self.log.warning("The kept request of %s does not fit this version; its card shows less", self._log_name)
        started_at = state.get("started_at")
        self.started_at = started_at if isinstance(started_at, (int, float)) else None
        last = state.get("last_session")
        self.last_session = last if isinstance(last, dict) else None

    def run_post_stop_hook(self):
        """Every way a server ends passes here (stop, job gone, failed spawn): its token ends too."""
        if revoke_token(self.user.db, self.api_token_record):
            self.log.info("Revoked the API token of %s's ended server", self.user.name)
        self.api_token_record = None
        self._revoke_tunnel()
        return super().run_post_stop_hook()

    def clear_state(self):
        """The job is over (every way a server ends passes here, before the post-stop hook): so is
        its forward, on a forward-reach site."""
        if self.job_site and self.forward:
            in_background(self._close_forward(self.forward_id), f"Closing the forward of {self._log_name}", self.log)
        super().clear_state()
        self.job_site = ""
        self.started_at = None

    # --- life cycle on the site's queue monitor --------------------------------------------------
    @property
    def monitor(self) -> QueueMonitor:
        control = self.control
        as_user = control.query_user(self.user.name)
        return QueueMonitor.for_key((control.site_name, as_user or "hub"), control=control, as_user=as_user,
                                    interval=self.queue_interval, fast_interval=self.queue_fast_interval,
                                    logger=self.log)

    def port_reported(self, port: int) -> bool:
        """Called by the job callback handler with the port the server reported. One report per
        start: a second one (which could swap the port after it was checked) is refused."""
        if self._port_reported is None or self._port_reported.is_set():
            return False
        self.port = port
        self._port_reported.set()
        if self.job_id:
            self.monitor.hurry()   # the job runs: learn its node now, not at the next tick
        return True

    async def _wait_for_news(self, info: JobInfo | None, timeout: float) -> None:
        """Until the job's state changes, or its port is reported if it has not been yet."""
        waiters = [asyncio.ensure_future(self.monitor.wait_change(self.job_id, info, timeout))]
        if self._port_reported is not None and not self._port_reported.is_set():
            waiters.append(asyncio.ensure_future(self._port_reported.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @staticmethod
    def _epoch_windows(site, windows: dict) -> dict:
        return {name: {"partition": w["partition"] if w["partition"] in site.partitions else "",
                       "active": w["active"],
                       "start": session_mod.site_time_to_epoch(w["start"], site.timezone),
                       "end": session_mod.site_time_to_epoch(w["end"], site.timezone)}
                for name, w in windows.items()}

    async def start(self):
        self._start_failed = False
        self.stop_reason = None        # a culler's note from a stop that never came is not this session's
        try:
            return await self._start_job()
        except Exception:
            self._start_failed = True     # for the ended card: the hub stops it next, not the user
            raise

    async def _start_job(self):
        self.ip = "0.0.0.0"
        if self.job_request is None:
            await self.apply_job_request(self.user_options or {})
        if self.reverse:
            self.ip = "127.0.0.1"   # on the node, only the job's own tunnel reaches it
        self.port = 0
        if self.server:
            self.server.port = 0
        self._port_reported = asyncio.Event()
        self._reservation_start = await self._reservation_start_of(self.job_request)
        await self.submit_batch_script()
        monitor, job_id = self.monitor, self.job_id
        monitor.watch_start(job_id)
        try:
            while True:
                info = monitor.info(job_id)
                if info is not None and not info.active:
                    raise await self._died_early(info)
                self._note_running(info)      # billed from here, JupyterLab up or not
                if info is not None and info.running and self.port:
                    ip, port = info.node, self.port
                    break
                await self._wait_for_news(info, timeout=5)
            if self.reverse:
                ip, port = "127.0.0.1", self.tunnel_grant.port
                await self._wait_for_tunnel(port)
            elif self.forward:
                ip, port = "127.0.0.1", await self._open_forward(ip, port)
            elif self.remote:
                ip = await self._node_address(ip)
            else:
                ip = await self._local_node_address(ip)
            await self._prove_listener(ip, port)      # before the token goes there
            await self._check_server_is_own(ip, port)
        finally:
            monitor.started(job_id)
        self.ip, self.port = ip, port   # exactly the address checked
        self.log.info("Job %s of %s runs JupyterLab at %s:%s", self.job_id, self.user.name, ip, port)
        return ip, port

    # --- reverse reach: the job's tunnel to the hub's gateway -----------------------------------------
    @property
    def reverse(self) -> bool:
        reach_of_site = self.sites[self.site_name].reach
        return reach_of_site is not None and reach_of_site.mode == "reverse"

    def _grant_tunnel(self) -> dict[str, str]:
        """A gateway port for the job, and its credential, as the job's AIFA_TUNNEL_* variables."""
        settings, site = self.tunnel_gateway, self.sites[self.job_request.site]
        try:
            self.tunnel_grant = gateway.grant_port(settings["grants_dir"], tuple(settings["ports"]))
            valid_seconds = int(self.job_request.hours * 3600) + self.start_timeout + 600
            credential = gateway.job_credential(settings["ca_key_file"], self.tunnel_grant, valid_seconds)
            gateway.mark_expiry(settings["grants_dir"], self.tunnel_grant, time.time() + valid_seconds)
            known_host = gateway.known_hosts_line(site.reach.gateway, settings["port"], settings["host_key_file"])
        except (gateway.NoFreePort, OSError, KeyError, ValueError) as e:
            self._revoke_tunnel()
            self.log.error("No tunnel for %s on %s: %s", self.user.name, site.name, e)
            raise SpawnError(f"Servers on {site.title} cannot be reached right now: the workbench's tunnel "
                             "gateway has no room or is not set up. Try again later, or choose another site; "
                             "if it persists, tell your workbench administrator.") from None
        return {"AIFA_TUNNEL_KEY": credential.private_key, "AIFA_TUNNEL_CERT": credential.certificate,
                "AIFA_TUNNEL_KNOWN_HOSTS": known_host, "AIFA_TUNNEL_PORT": str(self.tunnel_grant.port),
                "AIFA_TUNNEL_GATEWAY": f"{settings['user']}@{site.reach.gateway}",
                "AIFA_TUNNEL_GATEWAY_PORT": str(settings["port"])}

    def _revoke_tunnel(self) -> None:
        if self.tunnel_grant is not None and self.tunnel_gateway.get("grants_dir"):
            gateway.revoke(self.tunnel_gateway["grants_dir"], self.tunnel_grant)
        self.tunnel_grant = None

    async def _wait_for_tunnel(self, port: int) -> None:
        """Until the job's tunnel listens on the gateway (it opens once JupyterLab listens). Only
        the kernel's word counts: nothing connects to the port before the gateway's account is
        seen holding it (anyone on this host may bind a port of the range first)."""
        deadline = time.monotonic() + self.tunnel_open_seconds
        while True:
            if await asyncio.to_thread(socket_owner.owners, "127.0.0.1", port):   # /proc: ~10 ms
                return            # whose it is, _prove_listener says
            info = self.monitor.info(self.job_id)
            if info is not None and not info.active:
                raise await self._died_early(info)
            if time.monotonic() > deadline:
                raise SpawnError(f"Your server on {self.sites[self.site_name].title} started but its tunnel to "
                                 f"the workbench did not open within {self.tunnel_open_seconds:.0f} seconds, so "
                                 "you could not reach it. Start it again; if it keeps happening, tell your "
                                 "workbench administrator (the job's output says why).")
            await asyncio.sleep(0.2)

    # --- who holds the server's address on this host ----------------------------------------------
    async def _local_node_address(self, node: str) -> str:
        """The local cluster's node as one address, IPv4 first (the one checked is the one routed).
        A name that resolves to nothing stays a name: nothing can connect to it, token or not."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(node, None, type=socket.SOCK_STREAM)
        except OSError:
            return node
        found.sort(key=lambda entry: entry[0] != socket.AF_INET)
        return found[0][4][0] if found else node

    def _listener_uid(self) -> int | None:
        """Whose socket the server's address must be, when it is on this host: the tunnel
        gateway's account (reverse reach), the tunnel daemon's, which is this hub's (forward), the
        job's user (the local cluster's node); None where the address is another host's."""
        try:
            if self.reverse:
                return pwd.getpwnam(self.tunnel_gateway["user"]).pw_uid
            if self.forward:
                return os.geteuid()
            if not self.remote:
                return pwd.getpwnam(self.local_username()).pw_uid
        except (KeyError, TypeError):
            return -1             # an account that does not exist here owns nothing
        return None

    async def _prove_listener(self, ip: str, port: int) -> None:
        """On this host, the kernel says whose socket takes a connection to ip:port: it must be
        the expected account's alone, or the hub sends nothing there (not even its check)."""
        expected = self._listener_uid()
        if expected is None or not socket_owner.is_local_address(ip):
            return
        owners = await asyncio.to_thread(socket_owner.owners, ip, port)
        if owners == {expected}:
            return
        self.log.error("Job %s of %s: %s:%s is held by uid %s, not %s: not sending it the server's token",
                       self.job_id, self.user.name, ip, port, sorted(owners) or "nobody", expected)
        if self.reverse:
            self._revoke_tunnel()
        raise SpawnError(f"Your server on {self.sites[self.site_name].title} could not be connected safely: "
                         "another program on the workbench's host holds the address meant for it, so the "
                         "workbench sent it nothing and stopped your job. Start your server again; if it "
                         "keeps happening, tell your workbench administrator.")

    # --- forward reach: the tunnel daemon's forwards --------------------------------------------------
    @property
    def forward(self) -> bool:
        reach_of_site = self.sites[self.site_name].reach
        return reach_of_site is not None and reach_of_site.mode == "forward"

    @property
    def forward_id(self) -> str:
        """One per job: closing an ended job's forward never closes the next job's."""
        return f"{self.user.name}/{self.name}.{self.job_id}"

    def _tunnel_error(self, action: str, error: TunnelDaemonError) -> SpawnError:
        title = self.sites[self.site_name].title
        self.log.error("Tunnel daemon, %s for %s on %s: %s", action, self.user.name, self.site_name, error.detail)
        return SpawnError(f"Servers on {title} cannot be reached right now: the workbench's tunnel to "
                          f"{title} is not working, so your server was not started (or was stopped). Try again "
                          "in a few minutes, or choose another site; if it persists, tell your workbench administrator.")

    async def _hub_api_forward(self) -> str:
        try:
            answer = await ask_tunnel_daemon(self.tunnel_daemon_socket,
                                             {"op": "hub_api", "site": self.site_name, "user": self.user.name})
        except TunnelDaemonError as e:
            raise self._tunnel_error("the hub API forward", e) from None
        ca = answer.get("ca")
        if not (isinstance(ca, str) and ca.startswith("-----BEGIN CERTIFICATE-----") and len(ca) < 8192):
            raise self._tunnel_error("the hub API forward", TunnelDaemonError("no CA for the hub API's TLS"))
        self._job_hub_ca = ca
        return f"https://{answer['host']}:{int(answer['port'])}"

    async def _open_forward(self, node: str, port: int) -> int:
        request = {"op": "open", "id": self.forward_id, "site": self.site_name, "user": self.user.name,
                   "host": node, "port": port}
        try:
            return int((await ask_tunnel_daemon(self.tunnel_daemon_socket, request))["local_port"])
        except TunnelDaemonError as e:
            raise self._tunnel_error("a forward", e) from None

    async def _close_forward(self, forward_id: str) -> None:
        try:
            await ask_tunnel_daemon(self.tunnel_daemon_socket, {"op": "close", "id": forward_id})
        except TunnelDaemonError as e:
            self.log.warning("Forward %s not closed: %s", forward_id, e.detail)

    async def _node_address(self, node: str) -> str:
        try:
            return await reach.node_address(self.control, self.user.name, node)
        except SiteError as e:
            raise SpawnError(e.sentence) from None

    async def _check_server_is_own(self, ip: str, port: int) -> None:
        """Before the route is added: the server at the reported address must be this user's,
        this very server (a job may report any port of its node, another user's among them)."""
        url = f"http://{ip}:{port}{self.server.base_url}api/me"
        identity = await own_server_identity(url, self.api_token, timeout=min(self.command_timeout, 10))
        if identity != self.user.name:
            self.log.warning("Job %s of %s reported %s:%s, where %s answers: not routing it", self.job_id,
                             self.user.name, ip, port, shown(identity) if identity else "no server of theirs")
            raise SpawnError("Your job reported an address where your own server does not answer, so the "
                             "workbench did not connect you to it. Start your server again; if it keeps "
                             "happening, tell your workbench administrator.")

    async def _died_early(self, info: JobInfo) -> SpawnError:
        job_id = self.job_id
        tail = await self._job_output_tail(job_id)
        self.monitor.untrack(job_id)
        self._record_end(info.state)
        self.clear_state()
        why = info.state.lower() if info.state != "GONE" else "gone from the queue"
        if info.reason and info.reason != "None":
            why += f": {describe_reason(info.reason)}"
        message = f"Your job {job_id} ended before JupyterLab started ({why})."
        if tail:
            message += " The last lines it wrote:\n" + tail
        self.log.warning("Spawn of %s failed: %s", self.user.name, bounded(message, 2000))
        return SpawnError(message)

    async def _job_output_tail(self, job_id: str) -> str:
        output = await self.control.tail(self.user.name, f"{self.user_home()}/.aifa-workbench-job-{job_id}.log",
                                         self.log_tail_bytes)
        return output_tail(output, self.log_tail_lines, self.log_tail_line_chars,
                           cut_at_start=len(output.encode()) >= self.log_tail_bytes)

    async def progress(self):
        yield {"progress": 10, "message": "Submitting your job to Slurm…"}
        last = None
        while True:
            if self.job_id:
                info = self.monitor.info(self.job_id)
                event = self._progress_event(info)
                if event["message"] != last:
                    last = event["message"]
                    yield event
                await self._wait_for_news(info, timeout=5) if self._port_reported else await asyncio.sleep(0.2)
            else:
                await asyncio.sleep(0.2)

    def _progress_event(self, info: JobInfo | None) -> dict:
        """The waiting page's bar and line; an expected start also as a <time> the page shows in
        the reader's own zone."""
        where = self.job_request.partition if self.job_request else "its"
        if info is None:
            return {"progress": 15, "message": f"Job {self.job_id} submitted; waiting for Slurm to report on it…"}
        if info.waiting:
            text = f"Job {self.job_id} is waiting in the {where} queue: {describe_reason(info.reason)}."
            event = {"progress": 25, "message": text}
            zone = self.sites[self.job_request.site].timezone if self.job_request else None
            expected = session_mod.expected_start(info, zone, self._reservation_start)
            if expected:
                moment = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expected))
                event["message"] = f"{text} Slurm expects it to start at {moment}."
                event["html_message"] = (f"{html.escape(text)} Slurm expects it to start at <time class=\"aifa-when\" "
                                         f"datetime=\"{int(expected)}\">{html.escape(moment)}</time>.")
                event["progress"] = 35
            return event
        if info.running and not self.port:
            return {"progress": 60, "message": f"Job {self.job_id} is running on {info.node}; JupyterLab is starting…"}
        if info.running:
            return {"progress": 85, "message": f"JupyterLab answered on {info.node}; connecting you…"}
        return {"progress": 90, "message": f"Job {self.job_id} is {info.state.lower()}."}

    async def poll(self):
        if not self.job_id:
            self.clear_state()
            return 1
        monitor = self.monitor
        monitor.track(self.job_id)
        info = monitor.info(self.job_id)
        if info is None:   # first look after a hub restart: wait for one queue poll
            info = await monitor.wait_change(self.job_id, None, self.command_timeout)
        if info is None or info.active:
            self._note_running(info)
            return None    # running, or Slurm did not answer: never "gone" on an error
        monitor.untrack(self.job_id)
        self._record_end(info.state)
        self.clear_state()
        return 1

    async def notice_job_end(self) -> None:
        """The job reported that it ends: confirm with Slurm, then tell the hub (stops the route).

        Bound to the job that reported: if the server was stopped (and maybe started anew with
        another job) meanwhile, there is nothing to tell."""
        job_id = self.job_id
        if not job_id:
            return
        monitor = self.monitor
        monitor.track(job_id)   # after a hub restart the job may not be tracked yet
        monitor.hurry()
        info = monitor.info(job_id)
        deadline = time.monotonic() + END_CONFIRM_SECONDS
        while (info is None or info.active) and self.job_id == job_id and time.monotonic() < deadline:
            info = await monitor.wait_change(job_id, info, 1.0)
            monitor.hurry()
        if self.job_id != job_id:
            monitor.untrack(job_id)   # stopped (and maybe started anew) meanwhile: nobody waits for it
            return
        if self.pending:
            return   # starting or stopping: start() and stop() see their own jobs
        await self.poll_and_notify()

    async def stop(self, now=False):
        if not self.job_id:
            return
        if not self.last_session or self.last_session.get("job_id") != self.job_id:
            self._note_running(self.monitor.info(self.job_id))
            late = self.pending == "spawn" and time.monotonic() - self._submitted_at >= self.start_timeout - 1
            self._record_end("start failed" if self._start_failed else
                             "start timeout" if late and not self.started_at else
                             self.stop_reason if self.stop_reason in HUB_STOP_REASONS and self.started_at
                             else "stopped")
        self.stop_reason = None
        job_id, monitor = self.job_id, self.monitor
        await self.cancel_batch_job()
        if now:
            return
        info = monitor.info(job_id)
        for _ in range(20):
            monitor.hurry()
            if info is not None and not info.active:
                break
            info = await monitor.wait_change(job_id, info, 1.0)
        monitor.untrack(job_id)

    # --- the session card of the hub's pages ------------------------------------------------------
    def _note_running(self, info: JobInfo | None, now: float | None = None) -> None:
        if (self.started_at is None and info is not None and info.running and info.time_left is not None
                and self.job_request is not None):
            now = time.time() if now is None else now
            self.started_at = now - max(0, self.job_request.hours * 3600 - info.time_left)

    async def _reservation_start_of(self, request) -> float | None:
        """When the request's reservation begins: Slurm gives a job waiting for a reservation no
        expected start of its own."""
        if request is None or not request.reservation:
            return None
        site = self.sites[request.site]
        try:
            windows = self._epoch_windows(site, await self.facts(site.name).reservation_windows(
                self.user.name, [request.reservation]))
        except SiteError:
            return None
        return windows.get(request.reservation, {}).get("start")

    def _catalogue_site(self):
        """The site of the current request while the catalogue still has it and its partition."""
        request = self.job_request
        site = self.sites.get(request.site) if request is not None else None
        return site if site is not None and request.partition in site.partitions else None

    def _record_end(self, final_state: str) -> None:
        """What ended, why and what it cost, kept (in the hub's state) for the home page."""
        site = self._catalogue_site()
        if not self.job_id or site is None:
            return
        now = time.time()
        if final_state in ("stopped", "start timeout", "start failed", *HUB_STOP_REASONS):
            ending = final_state
        else:
            ran = now - self.started_at if self.started_at else 0
            ending = session_mod.ending_of(final_state, ran, self.job_request.hours * 3600)
        self.last_session = session_mod.ended_summary(site, self.job_request, self.job_id, ending,
                                                      self.started_at, now)
        self.started_at = None

    def session_card(self, now: float | None = None) -> dict | None:
        """The live card of this server's job (None without one): the queue's last word, no query."""
        request, site = self.job_request, self._catalogue_site()
        submitting = not self.job_id and self.pending == "spawn"
        if not (self.job_id or submitting) or site is None:
            return None
        now = time.time() if now is None else now
        info = self.monitor.info(self.job_id) if self.job_id else None
        self._note_running(info, now)
        card = session_mod.live_card(site, request, self.job_id, info, now, ready=self.ready, pending=self.pending,
                                     started_at=self.started_at, reservation_start=self._reservation_start)
        card["reason"] = describe_reason(card["reason"]) if card["reason"] else ""
        return card

    async def cancel_batch_job(self):
        if not self.job_id:
            return
        try:
            await self.control.cancel(self.user.name, self.job_id)
        except SiteError as e:
            self.log.warning("scancel %s failed: %s", self.job_id, e.detail or e)
