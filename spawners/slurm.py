"""WorkbenchSlurmSpawner: JupyterLab as a Slurm job of the user, on the site the user chose.

Taken from batchspawner's SlurmSpawner: its state fields (`job_id`, `job_status`) and how they are
kept across hub restarts (get_state, load_state, clear_state), and its API route (whose handler
spawners.job_report replaces). Replaced, all of it: start, poll, stop and progress (on the site's queue
monitor), submission and every Slurm query (through the site's job control, argv lists only),
the merge of `user_options` into template variables (a JobRequest validated against the site
catalogue instead), and errors users can read. batchspawner's own settings (req_*, batch_*,
state_*, exec_prefix, ...) therefore do nothing here, and the hub warns when one is set.

This class is the life cycle (start, poll, stop, the hub's state) and its wiring; what it is made
of lives beside it: admission (a request or a refusal), reach (one strategy per reach mode: its
tunnels, its address, its part of the state), submission and script (what goes to the site),
form, session_card and progress_wording (what the user sees). Every end of a job passes through
_end_job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import pwd
import time

from batchspawner import SlurmSpawner
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Any, Dict, Float, Integer, List, Unicode, default

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.model import course as model_course
from aifa_workbench.model.request import JobRequest, UserContext
from aifa_workbench.sites.commands import bounded
from aifa_workbench.sites.control import JobControl
from aifa_workbench.sites.errors import SiteError
from aifa_workbench.sites.registry import SiteControls
from aifa_workbench.sites.slurm_cli import JobInfo

from . import admission, form, metrics, profiles as profiles_mod, progress_wording, session_card, submission
from .queue_monitor import QueueMonitor
from .server_token import is_record, limit_token, revoke_token
from .script import ScriptContext, render_batch_script, runtime_paths, server_launch_argv
from aifa_workbench.sites.slurm_facts import SlurmFacts
from .progress_wording import output_tail
from .submission import export_names
from .errors import SpawnError
from .reach import Reach, forward_id, reach_for

# How long a job's own end report waits for Slurm to confirm it: longer than the SSH runner's
# longest pause between logins (30 s), so an end reported just after a login node came back is
# confirmed by the first login after the pause, not at JupyterHub's next poll of the server.
END_CONFIRM_SECONDS = 60.0

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
        300,
        help="Seconds a user's Slurm accounts (sacctmgr, ~0.2 s a query) are reused between spawns; 0: never.",
    ).tag(config=True)
    command_timeout = Float(30, help="Seconds before a Slurm command is given up on.").tag(config=True)
    queue_interval = Float(
        30,
        help="Seconds between the site's queue polls while every tracked job runs (one squeue for all jobs).",
    ).tag(config=True)
    queue_fast_interval = Float(
        1,
        help="Seconds between queue polls while a tracked job waits to start, or Slurm does not answer.",
    ).tag(config=True)
    walltime_warnings_minutes = List(
        Integer(),
        default_value=[10, 2],
        help="Minutes before a job's time limit at which JupyterLab warns the user and saves every open "
        "notebook (after the last one it keeps saving every 10 s until the end).",
    ).tag(config=True)
    log_tail_lines = Integer(15, help="Lines of a job's output shown when it dies before JupyterLab answers.").tag(
        config=True
    )
    log_tail_bytes = Integer(
        16384,
        help="Bytes read from the end of a job's output for those lines (a job may write gigabytes, "
        "or one line of megabytes: only this much is ever read).",
    ).tag(config=True)
    log_tail_line_chars = Integer(300, help="Characters shown of each of those lines.").tag(config=True)
    keys_page_url = Unicode(
        "",
        help="The hub's page of each user's keys for the remote sites, named in "
        "sentences about a refused or missing key.",
    ).tag(config=True)
    hub_port = Integer(8081, help="The hub's API port, for the sites' reach.hub_url ({hub_port}).").tag(config=True)
    runtime_wheelhouse = Unicode(
        "/opt/aifa-workbench/wheelhouse",
        help="The job runtime this hub's code needs on remote sites (its id is checked before a spawn).",
    ).tag(config=True)
    workbench = Any(
        None,
        allow_none=True,
        help="The hub's runtime (hub_config.runtime.Workbench), set by the hub's configuration: who each user "
        "is on each site (identities), each site's job control (controls) and the courses. Without it "
        "(tests, render-script) the site_users setting says who users are and there are no courses.",
    ).tag(config=True)
    hub_id = Unicode(
        "hub",
        help="This hub's id in its job names (aifa-wb-<hub id>-<user>): two hubs on one cluster "
        "then never take each other's jobs for orphans. Lowercase letters and digits, at most 12.",
    ).tag(config=True)
    tunnel_gateway = Dict(
        {},
        help="The hub's tunnel gateway, for sites in reverse reach (LUMI): port, user, ports (the "
        "range granted), host_key_file, grants_dir (the settings' tunnel_gateway), and ca_key_file.",
    ).tag(config=True)
    tunnel_open_seconds = Float(
        60,
        help="How long a reverse-reach job may take to open its tunnel once JupyterLab listens.",
    ).tag(config=True)
    tunnel_daemon_socket = Unicode(
        "",
        help="The unix socket of the tunnel daemon (`aifa-workbench tunneld`), for sites in forward reach (JUPITER).",
    ).tag(config=True)
    support_contact = Unicode(
        "your trainer, or the BE-AIFA support desk",
        help="Whom users ask (the settings' support_contact), named where the form cannot help them.",
    ).tag(config=True)
    personal_named_servers = Integer(
        0,
        help="How many named servers of their own a user may have (the settings' named_servers_per_user); "
        "a course's session is a named server apart (course-<id>), whatever this says.",
    ).tag(config=True)
    job_request = None
    _refused_form: dict | None = None  # the values of a form the hub refused, for the form shown again
    job_site = ""  # the site the current job runs on; kept in the hub's state across restarts
    site_home = ""  # the user's home on it, as the site said at this start (remote sites)
    site_storage: dict | None = None  # the project's directories it has for this job, likewise {kind: dir}
    api_token_record: dict | None = None  # which row the server's API token is (not the secret), kept likewise
    _port_reported: asyncio.Event | None = None
    started_at: float | None = None  # when the current job started running (epoch), kept likewise
    _submitted_at = 0.0  # monotonic: when the current job was submitted
    _queue_counted = True  # its wait in the queue is in the metrics (or it was not submitted here)
    _start_failed = False  # the current start raised (the hub stops the server next)
    # why the hub itself stops a server, when it says so on the ended card (one of session_card.HUB_STOP_REASONS)
    stop_reason: str | None = None
    _reservation_start: float | None = None  # epoch: when the current job's reservation begins
    last_session: dict | None = None  # what ended last, why and what it cost (session.ended_summary)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._own_controls: SiteControls | None = None
        self._configured_hub_connect_url = self.hub_connect_url  # c.Spawner.hub_connect_url, if any
        self._reaches: dict[str, Reach] = {}  # by site name: each site's reach strategy
        for name in ignored_batchspawner_settings(self.config):
            _warn_once(
                self.log,
                f"The setting {name!r} is batchspawner's and does nothing here: "
                "WorkbenchSlurmSpawner builds its Slurm commands from the site catalogue.",
            )

    @default("env_keep")
    def _default_env_keep(self):
        return []

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, options: spawner.apply_job_request(options)

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    # --- catalogue, profiles, admission (spawners.admission) ----------------------------------
    @property
    def sites(self):
        return cached_catalogue(self.catalogue_dir, tuple(self.enabled_sites))

    @property
    def quick_start_profiles(self):
        return profiles_mod.quick_start_profiles(self.sites)

    @property
    def identities(self):
        """Who each hub user is on each site (sites.registry.Identities); None without the hub's runtime."""
        return self.workbench.identities if self.workbench is not None else None

    @property
    def courses(self):
        """The hub's courses (book and rules); None where they are off."""
        return self.workbench.courses if self.workbench is not None else None

    @property
    def site_controls(self) -> SiteControls:
        if self.workbench is not None:
            return self.workbench.controls
        if self._own_controls is None:  # a spawner without the hub (tests, render-script)
            self._own_controls = SiteControls()
        return self._own_controls

    def control_of(self, site_name: str) -> JobControl:
        return self.site_controls.of(self.sites[site_name], self.slurm_bin, self.command_timeout)

    @property
    def control(self) -> JobControl:
        """The job control of the site of the current (or next) job."""
        return self.control_of(self.site_name)

    @property
    def site_name(self) -> str:
        return self.job_site or (self.job_request.site if self.job_request else self.default_site)

    def facts(self, site_name: str) -> SlurmFacts:
        return SlurmFacts(self.control_of(site_name), self.accounts_cache_seconds)

    def _applicant(self) -> admission.Applicant:
        return admission.Applicant(
            user=self.user.name,
            server_name=self.name,
            sites=self.sites,
            default_site=self.default_site,
            profiles={p.slug: p.options for p in self.quick_start_profiles},
            personal_named_servers=self.personal_named_servers,
            from_the_form=self._from_the_form(),
            local_username=self.local_username,
            site_account=self._site_account,
            facts_of=self.facts,
            control_of=self.control_of,
            courses=self.courses,
            log=self.log,
        )

    async def apply_job_request(self, options):
        """The job request of `options` (spawners.admission); a refusal is HTTP 400 in the form's words."""
        outcome = await admission.admit(self._applicant(), options)
        if isinstance(outcome, admission.Refusal):
            metrics.REFUSALS.labels(reason=outcome.step or "admission:other").inc()
            self.forget_user_options()
            if outcome.form is not None:
                self._refused_form = outcome.form
            raise user_error(outcome.sentence)
        self.job_request = outcome.request
        self.default_url = model_course.materials_url(outcome.course) if outcome.course else "/lab"

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

    # --- the spawn form (spawners.form) -----------------------------------------------------------
    async def render_options_form(self) -> str:
        applicant = self._applicant()
        try:
            context = await admission.user_context(applicant)
        except SiteError as e:  # the form still shows; a spawn then says what is wrong
            self.log.warning("Spawn form of %s without live accounts: %s", self.user.name, e.detail or e)
            context = UserContext()
        book = self.courses.book if self.courses is not None else None
        context = form.without_course_reservations(context, book)
        data = await form.site_data(
            self.sites,
            self.quick_start_profiles,
            context,
            self.facts,
            functools.partial(admission.budgets, applicant),
            self.user.name,
            self.log,
        )
        courses = profiles_mod.course_cards(book.active_of(self.user.name) if book else [], self.sites)
        refused, self._refused_form = self._refused_form, None
        return form.page(
            data,
            courses=courses,
            spawn_base=f"{self.hub.base_url}spawn/{self.user.escaped_name}/",
            support=self.support_contact,
            refused=refused,
            last_options=self.user_options or {},
            default_site=self.default_site,
        )

    def options_from_form(self, formdata):
        return form.options_from_form(formdata)

    # --- where the job runs, as whom, and how the hub reaches it (spawners.reach) ------------------
    @property
    def remote(self) -> bool:
        return self.sites[self.site_name].transport != "local"

    @property
    def reach(self) -> Reach:
        """How the hub and the job reach each other on the job's site (spawners.reach)."""
        name = self.site_name
        if name not in self._reaches:
            self._reaches[name] = reach_for(
                self.sites[name],
                self,
                tunnel_gateway=self.tunnel_gateway,
                tunnel_open_seconds=self.tunnel_open_seconds,
                tunnel_daemon_socket=self.tunnel_daemon_socket,
            )
        return self._reaches[name]

    # what spawners.tunnel_reconcile reads of a server: its reach mode, whose its address must be
    @property
    def reverse(self) -> bool:
        return self.reach.mode == "reverse"

    @property
    def forward(self) -> bool:
        return self.reach.mode == "forward"

    @property
    def forward_id(self) -> str:
        return forward_id(self.user.name, self.name, self.job_id)

    def _listener_uid(self) -> int | None:
        return self.reach.listener_uid()

    def site_username(self) -> str:
        """The user's name on the job's site (the settings' site_users; on the local cluster their
        own, or the guest account a course gave them)."""
        if not self.remote:
            return self.local_username()
        return self._site_account(self.site_name).get("username") or self.user.name

    def local_username(self) -> str:
        """Their account on the local cluster: their own, or the guest account a course gave them."""
        return self.identities.local_username(self.user.name) if self.identities is not None else self.user.name

    def _site_account(self, site_name: str) -> dict:
        """{username, accounts} of theirs on a site: the hub's registry (admins, the identity provider,
        the settings), or without the hub's runtime the site_users setting."""
        if self.identities is not None:
            return self.identities.site_account(self.user.name, site_name)
        return self.site_users.get(self.user.name, {}).get(site_name, {})

    def user_home(self) -> str:
        """The user's home on the job's site (where the job writes its output): the local cluster's
        passwd; a remote site's own word, read at this start or an earlier one ("" if never)."""
        if not self.remote:
            return pwd.getpwnam(self.site_username()).pw_dir
        if self.site_home:
            return self.site_home
        identities = self.identities
        known = identities.site_home(self.user.name, self.site_name, self.site_username()) if identities else None
        return known or ""

    def storage_asked(self) -> dict[str, str]:
        """The project's directories the catalogue names for the job's account, {kind: dir}."""
        paths, account = self.sites[self.site_name].paths, self.job_request.account
        named = {"project": paths.project, "scratch": paths.scratch}
        return {kind: path.replace("{account}", account) for kind, path in named.items() if path and account}

    async def read_site_home(self) -> str:
        """The home the site gives the user, tried for writing (a sentence if it is full or not
        writable), and which of the project's directories exist there for them to write,
        remembered in the registry: nothing is written into a path the hub guessed."""
        report = await self.control.home(self.user.name, self.storage_asked())
        self.site_home, self.site_storage = report.home, dict(report.storage)
        if self.identities is not None:
            self.identities.remember_home(
                self.user.name,
                self.site_name,
                self.site_username(),
                self.site_home,
                {self.job_request.account: self.site_storage} if self.job_request.account else None,
            )
        return self.site_home

    # --- submission (spawners.submission, spawners.script), argv lists only -------------------------
    async def run_command(self, cmd, input=None, env=None):
        raise NotImplementedError("shell command strings are not used; see aifa_workbench.sites.control")

    def user_env(self, env):
        """batchspawner would add USER, HOME and SHELL from this host's passwd, which does not know
        most users (a course's participants run as guest accounts, others only on remote sites);
        the job never inherits them anyway (export_names), and its script sets HOME and USER."""
        return env

    def get_env(self):
        """Jobs of a remote site call the hub where their reach says (the catalogue's reach.hub_url,
        a forward's address): JupyterHub's hub_connect_url, set for this job; others where the
        configuration says."""
        self.hub_connect_url = self.reach.job_hub_base(self.hub_port) or self._configured_hub_connect_url
        return super().get_env()

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
            catalogue_dir="" if self.remote else self.catalogue_dir,  # the runtime's own copy there
            slurm_bin=site.paths.slurm_bin if self.remote else self.slurm_bin,
            hub_id=self.hub_id,
            env_file=env_file,
            tunnel=self.reach.tunnel_in_job,
            hub_ca=self.reach.hub_ca_in_job,
            hub_user=self.user.name,
            project_dir=(self.site_storage or {}).get("project", "") if self.remote else "",
            scratch_dir=(self.site_storage or {}).get("scratch", "") if self.remote else "",
        )
        return render_batch_script(self.job_request, site, ctx)

    async def submit_batch_script(self):
        if self.job_request is None:
            await self.apply_job_request(self.user_options or {})
        username, reach = self.user.name, self.reach
        try:
            await reach.prepare()
        except SpawnError:
            metrics.REFUSALS.labels(reason="hub:reach").inc()
            raise
        env = self.get_env()
        env_file = None
        asked_at = time.monotonic()
        try:
            if self.remote:
                await submission.check_runtime(
                    self.sites[self.site_name],
                    self.job_request.environment,
                    self.control,
                    username,
                    self.runtime_wheelhouse,
                    self.log,
                )
                env_file = submission.env_file(await self.read_site_home(), env, reach.job_env())
            script = self.batch_script(env, env_file[0] if env_file else None)
            self.log.debug("Batch script for %s:\n%s", username, script)
            job_id = await self.control.submit(username, script, env, env_file=env_file)
        except SiteError as e:
            self.log.error("sbatch for %s on %s failed: %s", username, self.job_request.site, e.detail or e)
            metrics.REFUSALS.labels(reason=metrics.site_reason(e)).inc()
            reach.release()
            raise SpawnError(submission.refused_sentence(e, self.keys_page_url)) from None
        except SpawnError:  # the environment's runtime is missing or outdated there
            metrics.REFUSALS.labels(reason="site:runtime").inc()
            reach.release()
            raise
        except BaseException:
            reach.release()
            raise
        self.job_id, self.job_site = job_id, self.job_request.site
        self._submitted_at, self._queue_counted = time.monotonic(), False
        metrics.SPAWN_PHASE.labels(site=self.job_site, phase="submit").observe(self._submitted_at - asked_at)
        # the token ends with the job at the latest: its walltime after it waited at most start_timeout
        self.api_token_record = limit_token(
            self.user.db, self.api_token, self.job_request.hours * 3600 + self.start_timeout
        )
        self.log.info("Submitted job %s for %s: %s", self.job_id, username, self.job_request)
        return self.job_id

    # --- state kept by the hub -------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.job_site:
            state["site"] = self.job_site
        if self.site_home:
            state["site_home"] = self.site_home
        if self.api_token_record is not None:
            state["api_token"] = self.api_token_record
        for reach in self._reaches.values():
            reach.save(state)
        if self.job_id and self.job_request is not None:  # for its card after a hub restart
            state["request"] = dataclasses.asdict(self.job_request)
        if self.started_at:
            state["started_at"] = self.started_at
        if self.last_session:
            state["last_session"] = self.last_session
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_site = state.get("site", "")
        self.site_home = state.get("site_home", "") if isinstance(state.get("site_home"), str) else ""
        record = state.get("api_token")
        self.api_token_record = record if is_record(record) else None
        if self.job_request is None and isinstance(state.get("request"), dict):
            try:
                self.job_request = JobRequest(**state["request"])
            except TypeError:
                self.log.warning(
                    "The kept request of %s does not fit this version; its card shows less", self._log_name
                )
        if self.site_name in self.sites:
            self.reach.restore(state)
        started_at = state.get("started_at")
        self.started_at = started_at if isinstance(started_at, (int, float)) else None
        last = state.get("last_session")
        self.last_session = last if isinstance(last, dict) else None

    # --- life cycle on the site's queue monitor --------------------------------------------------
    @property
    def monitor(self) -> QueueMonitor:
        control = self.control
        as_user = control.query_user(self.user.name)
        return QueueMonitor.for_key(
            (control.site_name, as_user or "hub"),
            control=control,
            as_user=as_user,
            interval=self.queue_interval,
            fast_interval=self.queue_fast_interval,
            logger=self.log,
        )

    def port_reported(self, port: int) -> bool:
        """Called by the job callback handler with the port the server reported. One report per
        start: a second one (which could swap the port after it was checked) is refused."""
        if self._port_reported is None or self._port_reported.is_set():
            return False
        self.port = port
        self._port_reported.set()
        if self.job_id:
            self.monitor.hurry()  # the job runs: learn its node now, not at the next tick
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

    async def start(self):
        self._start_failed = False
        self.stop_reason = None  # a culler's note from a stop that never came is not this session's
        try:
            return await self._start_job()
        except Exception:
            self._start_failed = True  # for the ended card: the hub stops it next, not the user
            raise

    async def _start_job(self):
        if self.job_request is None:
            await self.apply_job_request(self.user_options or {})
        reach = self.reach
        self.ip = reach.listen_ip
        self.port = 0
        if self.server:
            self.server.port = 0
        self._port_reported = asyncio.Event()
        self._reservation_start = await self._reservation_start_of(self.job_request)
        await self.submit_batch_script()
        monitor, job_id = self.monitor, self.job_id
        monitor.watch_start(job_id)
        running_since = None
        try:
            while True:
                info = monitor.info(job_id)
                if info is not None and not info.active:
                    raise await self._died_early(info)
                self._note_running(info)  # billed from here, JupyterLab up or not
                if running_since is None and info is not None and info.running:
                    running_since = self._queue_waited()
                if info is not None and info.running and self.port:
                    break
                await self._wait_for_news(info, timeout=5)
            ip, port = await reach.target(info.node, self.port)
            await reach.prove_listener(ip, port)  # before the token goes there
            await self._check_server_is_own(ip, port)
            metrics.SPAWN_PHASE.labels(site=self.job_site, phase="server").observe(time.monotonic() - running_since)
        finally:
            monitor.started(job_id)
        self.ip, self.port = ip, port  # exactly the address checked
        self.log.info("Job %s of %s runs JupyterLab at %s:%s", self.job_id, self.user.name, ip, port)
        return ip, port

    def _queue_waited(self, outcome: str = "ran") -> float:
        """The job runs (or its start is given up while it waits): how long it waited in the queue,
        counted once; the monotonic time now."""
        now = time.monotonic()
        if not self._queue_counted:
            self._queue_counted = True
            metrics.QUEUE_WAIT.labels(
                site=self.job_site, partition=self.job_request.partition, outcome=outcome
            ).observe(now - self._submitted_at)
        return now

    async def _check_server_is_own(self, ip: str, port: int) -> None:
        """Whether the server at the address is this very server (Reach.check_own_server)."""
        await self.reach.check_own_server(ip, port)

    async def _died_early(self, info: JobInfo) -> SpawnError:
        job_id = self.job_id
        tail = await self._job_output_tail(job_id)
        self._end_job(job_id, info.state)
        message = progress_wording.died_early(job_id, info, tail)
        self.log.warning("Spawn of %s failed: %s", self.user.name, bounded(message, 2000))
        return SpawnError(message)

    async def _job_output_tail(self, job_id: str) -> str:
        output = await self.control.tail(
            self.user.name, f"{self.user_home()}/.aifa-workbench-job-{job_id}.log", self.log_tail_bytes
        )
        return output_tail(
            output,
            self.log_tail_lines,
            self.log_tail_line_chars,
            cut_at_start=len(output.encode()) >= self.log_tail_bytes,
        )

    async def progress(self):
        yield dict(progress_wording.SUBMITTING)  # the hub may change the events it is given
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
        request = self.job_request
        return progress_wording.progress_event(
            self.job_id,
            info,
            partition=request.partition if request else None,
            zone=self.sites[request.site].timezone if request else None,
            reservation_start=self._reservation_start,
            port=self.port,
        )

    async def poll(self):
        if not self.job_id:
            self._end_job("")
            return 1
        monitor = self.monitor
        monitor.track(self.job_id)
        info = monitor.info(self.job_id)
        if info is None:  # first look after a hub restart: wait for one queue poll
            info = await monitor.wait_change(self.job_id, None, self.command_timeout)
        if info is None or info.active:
            self._note_running(info)
            return None  # running, or Slurm did not answer: never "gone" on an error
        self._end_job(self.job_id, info.state)
        return 1

    async def notice_job_end(self) -> None:
        """The job reported that it ends: confirm with Slurm, then tell the hub (stops the route).

        Bound to the job that reported: if the server was stopped (and maybe started anew with
        another job) meanwhile, there is nothing to tell."""
        job_id = self.job_id
        if not job_id:
            return
        monitor = self.monitor
        monitor.track(job_id)  # after a hub restart the job may not be tracked yet
        monitor.hurry()
        info = monitor.info(job_id)
        deadline = time.monotonic() + END_CONFIRM_SECONDS
        while (info is None or info.active) and self.job_id == job_id and time.monotonic() < deadline:
            info = await monitor.wait_change(job_id, info, 1.0)
            monitor.hurry()
        if self.job_id != job_id:
            self._end_job(job_id)  # stopped (and maybe started anew) meanwhile: nobody waits for it
            return
        if self.pending:
            return  # starting or stopping: start() and stop() see their own jobs
        await self.poll_and_notify()

    async def stop(self, now=False):
        job_id = self.job_id
        if not job_id:
            return
        if not self.last_session or self.last_session.get("job_id") != job_id:
            self._note_running(self.monitor.info(job_id))
            if self.pending == "spawn" and not self.started_at:  # given up while it waited
                self._queue_waited(outcome="gave_up")
            self._record_end(self._stop_ending())
        self.stop_reason = None
        await self.cancel_batch_job()
        if not now:
            await self._wait_until_over(job_id)
            self._end_job(job_id)

    def _stop_ending(self) -> str:
        late = self.pending == "spawn" and time.monotonic() - self._submitted_at >= self.start_timeout - 1
        return session_card.stop_ending(
            start_failed=self._start_failed, late=late, started=bool(self.started_at), stop_reason=self.stop_reason
        )

    async def _wait_until_over(self, job_id: str) -> None:
        """Until Slurm says the cancelled job is over, for at most about 20 s."""
        monitor = self.monitor
        info = monitor.info(job_id)
        for _ in range(20):
            monitor.hurry()
            if info is not None and not info.active:
                break
            info = await monitor.wait_change(job_id, info, 1.0)

    async def cancel_batch_job(self):
        if not self.job_id:
            return
        try:
            await self.control.cancel(self.user.name, self.job_id)
        except SiteError as e:
            self.log.warning("scancel %s failed: %s", self.job_id, e.detail or e)

    # --- the end of a job and of its server ----------------------------------------------------------
    def _end_job(self, job_id: str, final_state: str | None = None) -> None:
        """Every end of a job passes here (seen by poll or start, stopped, or a stale end report):
        the queue monitor stops following it and, while it is this server's job, what ended is kept
        for the card (`final_state`: Slurm's; None: kept already, or nothing to keep) and the
        job's state goes (clear_state)."""
        if job_id:
            self.monitor.untrack(job_id)
        if job_id != self.job_id:
            return
        if final_state:
            self._record_end(final_state)
        self.clear_state()

    def _record_end(self, final_state: str) -> None:
        """What ended, why and what it cost, kept (in the hub's state) for the home page."""
        site = self._catalogue_site()
        if not self.job_id or site is None:
            return
        metrics.job_ended(self.job_site or site.name, final_state, frozenset(session_card.HUB_ENDINGS))
        self.last_session = session_card.ended(
            site, self.job_request, self.job_id, final_state, self.started_at, time.time()
        )
        self.started_at = None

    def clear_state(self):
        """The job is over (JupyterHub calls this after the post-stop hook, and before a new start;
        _end_job as soon as the job ends): so is its reach's part, a forward-reach site's forward."""
        if self.job_site:
            self.reach.end_job()
        super().clear_state()
        self.job_site = ""
        self.site_home = ""  # read again at the next start
        self.started_at = None

    def run_post_stop_hook(self):
        """Every way a server ends passes here (stop, job gone, failed spawn): its token ends, and
        what its reach holds of the hub's (a gateway port) is given back."""
        if revoke_token(self.user.db, self.api_token_record):
            self.log.info("Revoked the API token of %s's ended server", self.user.name)
        self.api_token_record = None
        for reach in self._reaches.values():
            reach.release()
        return super().run_post_stop_hook()

    # --- the session card of the hub's pages ------------------------------------------------------
    def _note_running(self, info: JobInfo | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.started_at = session_card.started_at(self.started_at, info, self.job_request, now)

    async def _reservation_start_of(self, request) -> float | None:
        """When the request's reservation begins: Slurm gives a job waiting for a reservation no
        expected start of its own."""
        if request is None or not request.reservation:
            return None
        site = self.sites[request.site]
        try:
            windows = form.epoch_windows(
                site, await self.facts(site.name).reservation_windows(self.user.name, [request.reservation])
            )
        except SiteError:
            return None
        return windows.get(request.reservation, {}).get("start")

    def _catalogue_site(self):
        return session_card.catalogue_site(self.sites, self.job_request)

    def session_card(self, now: float | None = None) -> dict | None:
        """The live card of this server's job (None without one): the queue's last word, no query."""
        request, site = self.job_request, self._catalogue_site()
        submitting = not self.job_id and self.pending == "spawn"
        if not (self.job_id or submitting) or site is None:
            return None
        now = time.time() if now is None else now
        info = self.monitor.info(self.job_id) if self.job_id else None
        self._note_running(info, now)
        return session_card.live(
            site,
            request,
            self.job_id,
            info,
            now,
            ready=self.ready,
            pending=self.pending,
            started=self.started_at,
            reservation_start=self._reservation_start,
        )
