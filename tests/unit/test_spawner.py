"""The spawner class itself (start, poll, stop, progress, end report, restart) against a fake job
control, as kubespawner tests its spawner; the integration tests run the same paths on Slurm."""

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web

from aifa_workbench.sites.errors import SlurmNotAnswering
from aifa_workbench.sites.slurm_cli import JobInfo
from aifa_workbench.spawners import slurm as slurm_mod
from aifa_workbench.spawners.queue_monitor import QueueMonitor
from aifa_workbench.spawners.slurm import SpawnError, WorkbenchSlurmSpawner, ignored_batchspawner_settings


RECORD = {"id": 1, "user_id": 1, "created": "2026-12-02T06:00:00"}


class FakeJobControl:
    """A site's queue in memory: tests move jobs between states; calls are counted."""

    site_name, site_title = "local", "Test cluster"

    def __init__(self):
        self.states: dict[str, JobInfo] = {}
        self.calls = {"submit": 0, "jobs": 0, "cancel": 0}
        self.next_id, self.down, self.output = 100, False, ""
        self.submitted = []
        self.budget_minutes = {}  # {account: {"limit", "used", "running"}}: billing-minutes

    def query_user(self, hub_user):
        return None

    async def accounts(self, user, site_user=None):
        return ("proj_sme",)

    async def reservations_listing(self, as_user=None):
        return ""

    async def budgets(self, user, accounts, site_user=None):
        if self.down:
            raise SlurmNotAnswering(self.site_title, "down")
        return {a: m for a, m in self.budget_minutes.items() if a in accounts}

    async def submit(self, user, script, env=None, env_file=None):
        self.calls["submit"] += 1
        if self.down:
            raise SlurmNotAnswering(self.site_title, "sbatch: connect failure")
        self.next_id += 1
        job_id = str(self.next_id)
        self.submitted.append((user, script, env))
        self.states[job_id] = JobInfo(job_id, "PENDING", "Priority")
        return job_id

    async def jobs(self, job_ids, as_user=None):
        self.calls["jobs"] += 1
        if self.down:
            raise SlurmNotAnswering(self.site_title, "squeue: connect failure")
        return {j: self.states.get(j, JobInfo(j, "GONE")) for j in job_ids}

    async def cancel(self, user, job_id):
        self.calls["cancel"] += 1
        self.states[job_id] = JobInfo(job_id, "CANCELLED", "None", "n1")

    async def tail(self, user, path, max_bytes):
        return self.output

    def run(self, job_id, node="n1", time_left=None):
        self.states[job_id] = JobInfo(job_id, "RUNNING", "None", node, "", time_left)


class StubbedSpawner(WorkbenchSlurmSpawner):
    """The real spawner with what needs a hub stubbed: its database, environment and the check
    that the answering server is the user's own (all covered by the integration tests)."""

    fake: FakeJobControl = None
    checked = None

    def control_of(self, site_name):
        return self.fake

    def user_home(self):
        return "/home/alice"

    def get_env(self):
        return {"JUPYTERHUB_API_TOKEN": "s3cret", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}

    async def _check_server_is_own(self, ip, port):
        self.checked = (ip, port)

    async def poll_and_notify(self):
        self.notified = await self.poll()


@pytest.fixture
def fake(monkeypatch):
    QueueMonitor._registry.clear()
    monkeypatch.setattr(slurm_mod, "limit_token", lambda db, token, seconds: RECORD)
    monkeypatch.setattr(slurm_mod, "revoke_token", lambda db, record: record is not None)
    yield FakeJobControl()
    for monitor in QueueMonitor._registry.values():
        if monitor._task:
            monitor._task.cancel()
    QueueMonitor._registry.clear()


def make_spawner(fake, **state):
    user = SimpleNamespace(name="alice", url="/user/alice/", escaped_name="alice", db=None, groups=[])
    spawner = StubbedSpawner(
        user=user,
        hub=SimpleNamespace(api_url="http://127.0.0.1:1/hub/api/", base_url="/hub/"),
        queue_fast_interval=0.01,
        queue_interval=0.05,
    )
    spawner.fake = fake
    spawner.user_options = {"partition": "cpu"}
    if state:
        spawner.load_state(state)
    return spawner


async def wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_event_loop().time() + timeout
    while not predicate():
        assert asyncio.get_event_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_start_waits_for_running_and_the_port_then_checks_that_address(fake):
    spawner = make_spawner(fake)
    start = asyncio.ensure_future(spawner.start())
    await wait_for(lambda: spawner.job_id)
    user, script, env = fake.submitted[0]
    assert user == "alice" and "#SBATCH --partition=cpu" in script and "s3cret" not in script
    assert env["JUPYTERHUB_API_TOKEN"] == "s3cret"  # to the runner, never into the script
    fake.run(spawner.job_id, "node7")
    await asyncio.sleep(0.05)
    assert not start.done()  # running, but JupyterLab has not reported
    assert spawner.port_reported(8123) and not spawner.port_reported(9999)  # one report per start
    assert await asyncio.wait_for(start, 5) == ("node7", 8123)
    assert spawner.checked == ("node7", 8123)
    assert spawner.get_state()["site"] == "local" and spawner.get_state()["job_id"] == spawner.job_id


async def test_a_reported_port_does_not_make_start_or_progress_spin(fake):
    """Once the port is reported, start() and progress() wait for the monitor, not in a busy loop."""
    spawner = make_spawner(fake)
    start = asyncio.ensure_future(spawner.start())
    await wait_for(lambda: spawner.job_id)
    monitor = spawner.monitor
    looked = {"n": 0}
    real_info = monitor.info

    def counting_info(job_id):
        looked["n"] += 1
        return real_info(job_id)

    monitor.info = counting_info
    events = []

    async def follow():
        async for event in spawner.progress():
            events.append(event)

    progress = asyncio.ensure_future(follow())
    spawner.port_reported(8123)  # the port before Slurm says RUNNING
    monitor.fast_interval = 0.2
    await asyncio.sleep(0.5)
    assert looked["n"] < 40, f"{looked['n']} looks in 0.5 s: a busy loop"
    fake.run(spawner.job_id)
    await asyncio.wait_for(start, 5)
    progress.cancel()
    assert any("waiting in the cpu queue" in e["message"] for e in events)


async def test_a_job_that_dies_before_jupyterlab_says_why_with_its_last_lines(fake):
    fake.output = "loading modules\nImportError: no module named jupyterhub\n"
    spawner = make_spawner(fake)
    start = asyncio.ensure_future(spawner.start())
    await wait_for(lambda: spawner.job_id)
    job_id = spawner.job_id
    fake.states[job_id] = JobInfo(job_id, "FAILED", "NonZeroExitCode", "n1")
    with pytest.raises(SpawnError) as failed:
        await asyncio.wait_for(start, 5)
    message = failed.value.jupyterhub_message
    assert f"Your job {job_id} ended before JupyterLab started (failed: it ended with an error)" in message
    assert "ImportError: no module named jupyterhub" in message
    assert not spawner.job_id  # nothing left to track


async def test_slurm_not_answering_at_submit_is_a_sentence_naming_the_site(fake):
    fake.down = True
    spawner = make_spawner(fake)
    with pytest.raises(SpawnError) as failed:
        await spawner.start()
    assert failed.value.jupyterhub_message.startswith("The Slurm scheduler of Test cluster is not answering")


async def test_poll_keeps_a_server_while_slurm_is_down_and_ends_it_when_the_job_is_gone(fake):
    spawner = make_spawner(fake, job_id="55", site="local")
    fake.run("55")
    assert await spawner.poll() is None
    fake.down = True
    spawner.monitor.hurry()
    await wait_for(lambda: not spawner.monitor.slurm_ok)
    assert await spawner.poll() is None  # never "gone" on an error
    fake.down = False
    del fake.states["55"]  # purged from Slurm
    await wait_for(lambda: spawner.monitor.info("55").state == "GONE")
    assert await spawner.poll() == 1 and spawner.job_id == ""


async def test_stop_cancels_as_the_user_and_waits_for_the_end(fake):
    spawner = make_spawner(fake, job_id="56", site="local")
    fake.run("56")
    assert await spawner.poll() is None
    await asyncio.wait_for(spawner.stop(), 5)
    assert fake.calls["cancel"] == 1 and fake.states["56"].state == "CANCELLED"
    assert "56" not in spawner.monitor.jobs


async def test_an_end_report_is_confirmed_with_slurm_then_told_to_the_hub(fake):
    spawner = make_spawner(fake, job_id="57", site="local")
    fake.run("57")
    assert await spawner.poll() is None
    fake.states["57"] = JobInfo("57", "COMPLETED", "None", "n1")
    await asyncio.wait_for(spawner.notice_job_end(), 5)
    assert spawner.notified == 1


async def test_after_a_restart_a_new_spawner_finds_its_running_job(fake):
    first = make_spawner(fake)
    start = asyncio.ensure_future(first.start())
    await wait_for(lambda: first.job_id)
    fake.run(first.job_id)
    first.port_reported(8200)
    await asyncio.wait_for(start, 5)
    state = first.get_state()
    QueueMonitor._registry.clear()  # a new hub process
    again = make_spawner(fake, **state)
    assert again.job_id == first.job_id and again.job_site == "local"
    assert await again.poll() is None
    assert again.api_token_record == RECORD


async def test_the_session_card_survives_a_restart_and_what_ended_is_kept_with_why_and_cost(fake):
    first = make_spawner(fake)
    first.user_options = {"partition": "cpu", "hours": 2}
    start = asyncio.ensure_future(first.start())
    await wait_for(lambda: first.job_id)
    assert first.session_card()["state"] in ("queued", "submitting")
    fake.run(first.job_id, "node7", time_left=2 * 3600 - 1800)  # ran half an hour of 2 h
    first.port_reported(8200)
    await asyncio.wait_for(start, 5)
    state = first.get_state()
    assert state["request"]["partition"] == "cpu" and state["started_at"]
    QueueMonitor._registry.clear()  # a new hub process
    again = make_spawner(fake, **state)
    assert await again.poll() is None
    card = again.session_card()
    assert card["job_id"] == first.job_id and card["node"] == "node7" and card["partition"] == "cpu"
    assert 0 < card["seconds_left"] <= 5400
    fake.states[first.job_id] = JobInfo(first.job_id, "TIMEOUT", "TimeLimit", "node7")
    again.monitor.hurry()
    await wait_for(lambda: again.monitor.info(first.job_id).state == "TIMEOUT")
    assert await again.poll() == 1 and again.session_card() is None
    kept = again.get_state()["last_session"]  # JupyterHub stores the state after clear_state
    assert kept["ending"] == "walltime" and kept["job_id"] == first.job_id and kept["ran"].startswith("30 min")
    assert kept["cost"].endswith("core-hours")
    assert make_spawner(fake, **again.get_state()).last_session == kept


async def test_a_stop_from_the_hub_is_recorded_as_stopped(fake):
    spawner = make_spawner(
        fake,
        job_id="58",
        site="local",
        started_at=1.0,
        request={
            "site": "local",
            "partition": "cpu",
            "gpus": 0,
            "cpus": 1,
            "memory_gb": 2,
            "hours": 2,
            "account": "proj_sme",
            "environment": "workbench",
        },
    )
    fake.run("58")
    assert await spawner.poll() is None
    await asyncio.wait_for(spawner.stop(), 5)
    assert spawner.last_session["ending"] == "stopped" and spawner.last_session["job_id"] == "58"


def test_batchspawner_settings_that_do_nothing_are_named():
    config = {
        "SlurmSpawner": {"req_partition": "gpu"},
        "WorkbenchSlurmSpawner": {"exec_prefix": "ssh x", "venv_dir": "/v"},
    }
    assert ignored_batchspawner_settings(config) == ["exec_prefix", "req_partition"]


@pytest.mark.parametrize("site", ["local", "lumi"])
def test_a_job_calls_the_hub_where_its_sites_reach_says(site):
    """JupyterHub's hub_connect_url, per job: LUMI's jobs dial the address its catalogue names,
    under the hub's own base URL; the local cluster's, the hub's own address."""
    from aifa_workbench.model.catalogue import load_catalogue

    user = SimpleNamespace(name="alice", url="/@/b/user/alice/", escaped_name="alice", db=None, groups=[], spawners={})
    hub = SimpleNamespace(api_url="http://127.0.0.1:8081/@/b/hub/api", base_url="/@/b/hub/", public_host="")
    spawner = WorkbenchSlurmSpawner(user=user, hub=hub, enabled_sites=["local", "lumi"], hub_port=8081)
    spawner.job_site = site
    env = spawner.get_env()
    base = load_catalogue()["lumi"].reach.hub_base(8081) if site == "lumi" else "http://127.0.0.1:8081"
    assert env["JUPYTERHUB_API_URL"] == base + "/@/b/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == base + "/@/b/hub/api/users/alice/activity"


def test_a_configured_hub_connect_url_still_holds_where_no_reach_names_one():
    user = SimpleNamespace(name="alice", url="/user/alice/", escaped_name="alice", db=None, groups=[], spawners={})
    hub = SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", public_host="")
    spawner = WorkbenchSlurmSpawner(user=user, hub=hub, hub_connect_url="http://hub.internal:8081")
    spawner.job_site = "local"
    assert spawner.get_env()["JUPYTERHUB_API_URL"] == "http://hub.internal:8081/hub/api"


def sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_start_is_counted_for_prometheus_by_site_partition_and_phase_never_by_user(fake):
    waited = sample("aifa_workbench_queue_wait_seconds_count", site="local", partition="cpu", outcome="ran")
    served = sample("aifa_workbench_spawn_phase_seconds_count", site="local", phase="server")
    refused = sample("aifa_workbench_spawn_refusals_total", reason="site:slurm_down")
    spawner = make_spawner(fake)
    start = asyncio.ensure_future(spawner.start())
    await wait_for(lambda: spawner.job_id)
    assert sample("aifa_workbench_spawn_phase_seconds_count", site="local", phase="submit") >= 1
    fake.run(spawner.job_id, "node7")
    spawner.port_reported(8123)
    await asyncio.wait_for(start, 5)
    assert sample("aifa_workbench_queue_wait_seconds_count", site="local", partition="cpu", outcome="ran") == waited + 1
    assert sample("aifa_workbench_spawn_phase_seconds_count", site="local", phase="server") == served + 1
    ended = sample("aifa_workbench_job_ends_total", site="local", ending="stopped")
    await spawner.stop(now=True)
    assert sample("aifa_workbench_job_ends_total", site="local", ending="stopped") == ended + 1
    fake.down = True
    with pytest.raises(SpawnError):
        await make_spawner(fake).start()
    assert sample("aifa_workbench_spawn_refusals_total", reason="site:slurm_down") == refused + 1
    # a start given up while its job still waits: its wait so far, apart
    gave_up = sample("aifa_workbench_queue_wait_seconds_count", site="local", partition="cpu", outcome="gave_up")
    fake.down = False
    waiting = make_spawner(fake)
    waiting._spawn_pending = True
    start = asyncio.ensure_future(waiting.start())
    await wait_for(lambda: waiting.job_id)
    await waiting.stop(now=True)
    start.cancel()
    assert (
        sample("aifa_workbench_queue_wait_seconds_count", site="local", partition="cpu", outcome="gave_up")
        == gave_up + 1
    )
    asked = sample("aifa_workbench_spawn_refusals_total", reason="admission:request")
    odd = make_spawner(fake)
    odd.user_options = {"partition": "no-such-queue"}
    with pytest.raises(web.HTTPError):
        await odd.start()
    assert sample("aifa_workbench_spawn_refusals_total", reason="admission:request") == asked + 1
    from prometheus_client import REGISTRY, generate_latest

    assert b"alice" not in generate_latest(REGISTRY)


def test_a_jobs_end_is_counted_under_a_known_word():
    from aifa_workbench.spawners import metrics

    hub = frozenset({"stopped", "start failed"})
    before = {
        w: sample("aifa_workbench_job_ends_total", site="x", ending=w) for w in ("CANCELLED", "OTHER", "start failed")
    }
    metrics.job_ended("x", "CANCELLED by 21001", hub)
    metrics.job_ended("x", "start failed", hub)
    metrics.job_ended("x", "<script>", hub)
    metrics.job_ended("x", "", hub)
    after = {w: sample("aifa_workbench_job_ends_total", site="x", ending=w) for w in before}
    assert after == {
        "CANCELLED": before["CANCELLED"] + 1,
        "OTHER": before["OTHER"] + 2,
        "start failed": before["start failed"] + 1,
    }


def test_a_sites_failure_is_counted_under_a_fixed_word():
    from aifa_workbench.sites.errors import SiteError, SiteUnreachable
    from aifa_workbench.sites.registry import NoHostKey, NoSiteAccount
    from aifa_workbench.spawners.metrics import site_reason

    def bare(cls):
        return cls.__new__(cls)

    assert [
        site_reason(bare(c)) for c in (NoHostKey, NoSiteAccount, SiteUnreachable, SlurmNotAnswering, SiteError)
    ] == [
        "site:host_key",
        "site:no_account",
        "site:unreachable",
        "site:slurm_down",
        "site:other",
    ]
    assert site_reason(ValueError("x")) == "site:other"
