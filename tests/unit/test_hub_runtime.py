"""The hub's runtime (hub_config.runtime.Workbench): built once, handed to the pages through
tornado's settings and to the federated login through its trait, the same object everywhere."""

import asyncio
from types import SimpleNamespace
from unittest import mock

from tornado import httputil, web
from traitlets.config import Config

from aifa_workbench.hub_config.courses import book as courses
from aifa_workbench.hub_config.courses import page as courses_page
from aifa_workbench.hub_config.site_keys import page as keys_page
from aifa_workbench.hub_config.site_accounts import page as site_accounts_page
from aifa_workbench.hub_config.oidc import WorkbenchOAuthenticator
from aifa_workbench.hub_config.runtime import TORNADO_KEY, Workbench
from aifa_workbench.hub_config.site_accounts.registry import SiteAccounts
from aifa_workbench.hub_config.site_keys.store import SiteKeyStore
from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.sites.registry import Identities, SiteControls
from aifa_workbench.spawners import reconcile

SITES = load_catalogue()  # jupiter, lucia and lumi over SSH; local


def runtime_of(tmp_path, site_users=None, course_book=None) -> Workbench:
    registry = SiteAccounts(site_users or {}, tmp_path / "site-accounts.json")
    hub_courses = courses.Courses(course_book, courses.CoursesConfig()) if course_book is not None else None
    identities = Identities(registry, SiteKeyStore(tmp_path, "s3cret"))
    return Workbench(
        settings=None,
        sites=SITES,
        identities=identities,
        controls=SiteControls(identities),
        site_accounts=registry,
        courses=hub_courses,
        hub_egress=("192.0.2.7",),
        support="the desk",
    )


def handler(handler_class, runtime):
    application = web.Application(**{TORNADO_KEY: runtime, "hub": SimpleNamespace(base_url="/hub/")})
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/hub/site-keys", "HTTP/1.1"),
        headers=httputil.HTTPHeaders({"Host": "hub.example"}),
        connection=mock.Mock(),
    )
    return handler_class(application, request)


def test_the_hubs_tornado_settings_hand_every_page_the_one_runtime(tmp_path):
    from jupyterhub.app import JupyterHub

    runtime = runtime_of(tmp_path, course_book=courses.CourseBook(None))
    c = Config()
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 5, TORNADO_KEY: runtime}
    assert JupyterHub(config=c).tornado_settings[TORNADO_KEY] is runtime  # not a copy
    for page in (
        keys_page.SiteKeysHandler,
        keys_page.SiteKeyTestHandler,
        site_accounts_page.SiteAccountsPageHandler,
        site_accounts_page.SiteAccountsAPIHandler,
        site_accounts_page.SiteAccountAPIHandler,
    ):
        assert handler(page, runtime).workbench is runtime
    for page in (courses_page.CoursesPageHandler, courses_page.CourseInviteHandler, courses_page.CoursesAPIHandler):
        assert handler(page, runtime).hub_courses is runtime.courses


def test_the_keys_page_lists_the_remote_sites_of_the_runtime_with_its_support_and_egress(tmp_path):
    runtime = runtime_of(tmp_path, {"alice": {"jupiter": {"username": "alice1", "accounts": ["jsc_ai"]}}})
    rows = {row["name"]: row for row in keys_page.site_rows(runtime, "alice")}
    assert set(rows) == {"jupiter", "lucia", "lumi"}
    assert rows["jupiter"]["username"] == "alice1" and rows["jupiter"]["accounts"] == ["jsc_ai"]
    assert 'from="192.0.2.7"' in rows["jupiter"]["key"]
    assert "ask the desk to add your" in rows["lumi"]["missing"]


def test_the_site_accounts_page_reads_and_changes_the_runtimes_registry(tmp_path):
    runtime = runtime_of(
        tmp_path, {"bob": {"lumi": {"username": "bob1", "accounts": []}, "local": {"username": "bob", "accounts": []}}}
    )
    assert site_accounts_page.user_accounts(runtime, "bob") == {
        "lumi": {"username": "bob1", "accounts": [], "source": "settings"}
    }
    runtime.site_accounts.set_kept("bob", "lumi", {"username": "bob2", "accounts": ["p1"]})
    assert runtime.identities.site_username("bob", "lumi") == "bob2"
    running = SimpleNamespace(spawners={"": SimpleNamespace(job_site="lumi", job_id="42", active=True)})
    assert "stop it first" in site_accounts_page.refusal_of_change(runtime, running, "bob", "lumi", None)


def test_the_federated_login_gets_the_runtime_through_its_trait_not_a_copy(tmp_path):
    book = SimpleNamespace(groups_of=lambda user: {"course-ws1"} if user == "dana" else set())
    runtime = runtime_of(tmp_path, course_book=book)
    c = Config()
    c.WorkbenchOAuthenticator.workbench = runtime
    login = WorkbenchOAuthenticator(config=c, manage_groups=True, allowed_groups={"workbench"})
    assert login.workbench is runtime and login.site_accounts is runtime.site_accounts
    assert login.admits("dana", {"groups": ["course-ws1"]})
    assert not login.admits("erik", {"groups": ["course-ws1"]})
    assert WorkbenchOAuthenticator().course_book is None


def test_the_spawner_gets_the_runtime_through_its_trait_and_asks_it_who_users_are(tmp_path):
    from aifa_workbench.spawners.slurm import WorkbenchSlurmSpawner

    runtime = runtime_of(tmp_path, site_users={"alice": {"lumi": {"username": "alice1", "accounts": ["p1"]}}})
    runtime.identities.local_names = lambda user: "guest07" if user == "alice" else user
    c = Config()
    c.WorkbenchSlurmSpawner.workbench = runtime
    user = SimpleNamespace(name="alice", url="/user/alice/", escaped_name="alice", db=None, groups=[])
    spawner = WorkbenchSlurmSpawner(config=c, user=user, enabled_sites=["local", "lumi"])
    assert spawner.workbench is runtime and spawner.courses is None
    assert spawner.local_username() == "guest07" and spawner._site_account("lumi")["username"] == "alice1"
    assert spawner.control_of("lumi") is runtime.controls.of(
        runtime.sites["lumi"], spawner.slurm_bin, spawner.command_timeout
    )
    alone = WorkbenchSlurmSpawner(user=user, site_users={"alice": {"lumi": {"username": "al"}}})
    assert alone.local_username() == "alice" and alone._site_account("lumi") == {"username": "al"}


async def _turns(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


def _cancel(name: str) -> None:
    for task in asyncio.all_tasks():
        if task.get_coro().__name__ == name:
            task.cancel()


async def test_the_loops_ask_the_hub_callable_they_are_handed_and_wait_for_it_to_start(monkeypatch):
    started = asyncio.get_running_loop().create_future()
    app = SimpleNamespace(_start_future=started, log=SimpleNamespace(info=lambda *a: None))
    asked, rounds = [], []

    def hub():
        asked.append(app)
        return app

    async def end_due(app_, control, hub_courses, now=None):
        rounds.append((app_, hub_courses))
        return []

    monkeypatch.setattr(courses, "end_due_courses", end_due)
    hub_courses = courses.Courses(courses.CourseBook(None), courses.CoursesConfig(every_seconds=3600))
    courses.start_window_keeper(hub, None, hub_courses)
    reconcile.start_reconciler(hub, [], "h1", interval=3600)
    await _turns()
    assert asked == [app, app] and rounds == []
    started.set_result(None)
    await _turns()
    assert rounds == [(app, hub_courses)]
    _cancel("keep")
    _cancel("_run")


def test_every_page_a_handler_renders_is_on_jupyterhubs_template_paths():
    """Each feature's pages live beside its handlers: the hub's template paths must hold each one
    (and JupyterHub's own pages the workbench draws: page, home, spawn, the waiting page)."""
    import re
    from pathlib import Path

    from aifa_workbench.hub_config.runtime import template_paths

    hub_config = Path(__file__).resolve().parents[2] / "hub_config"
    rendered = {
        name
        for path in hub_config.rglob("*.py")
        for name in re.findall(r"render_template\(\s*\"([\w.]+\.html)\"", path.read_text())
    }
    included = {
        name
        for path in hub_config.rglob("*.html")
        for name in re.findall(r"\{%-? (?:include|extends|import|from) \"([\w.]+\.html)\"", path.read_text())
    }
    found = {p.name for directory in template_paths() for p in Path(directory).glob("*.html")}
    assert {"courses.html", "site_keys.html", "sessions.html"} <= rendered
    missing = (rendered | included | {"home.html", "spawn.html", "spawn_pending.html"}) - found
    assert not missing, missing
