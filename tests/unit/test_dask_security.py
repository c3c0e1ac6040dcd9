"""Dask on a shared node, without Slurm: the scheduler's dashboard answers only under its secret
prefix (a real Scheduler on loopback), workers serve no HTTP (a real Worker with the preload),
each worker job makes its own 0700 scratch directory (the job-script lines run by bash)."""

import contextlib
import os
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request

import psutil
import pytest

from aifa_workbench.extensions import dask_presets as dp
from aifa_workbench.extensions.job_context import NotebookJob
from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.model.request import UserContext

SITES = load_catalogue()
ENV = {
    "SLURM_JOB_ID": "42",
    "USER": "alice",
    "AIFA_WORKBENCH_SITE": "local",
    "AIFA_WORKBENCH_ENVIRONMENT": "workbench",
    "SLURM_JOB_ACCOUNT": "proj_sme",
    "SLURM_JOB_PARTITION": "cpu",
    "SLURMD_NODENAME": "vm",
}
ALICE = UserContext(accounts={"local": ("proj_sme",)}, reservations={"local": ()})
SECRET = "Zq3-uX_9kLw2PmR7vT5yB8nC1dF4gH6j"
# Everything Dask's scheduler serves, at the root and where a guess would put it.
OUTSIDE = [
    "/",
    "/status",
    "/info",
    "/info/main/workers.html",
    "/info/main/logs.html",
    "/json/index.html",
    "/json/counts.json",
    "/json/identity.json",
    "/metrics",
    "/sitemap.json",
    "/statics/css/base.css",
    "/individual-plots.json",
    "/individual-progress",
    "/health",
    "/api/v1",
    "/api/v1/version",
    "/static/js/bokeh.min.js",
    "/status/ws",
    f"/{SECRET[:-1]}/status",
    f"/{SECRET.lower()}/status",
    f"/{SECRET}x/status",
    f"//{SECRET}/status",
    f"/x/{SECRET}/status",
    "/proxy/8787/127.0.0.1/status",
]
INSIDE = ["/status", "/info/main/workers.html", "/json/index.html", "/metrics", "/health", "/individual-plots.json"]


def kwargs_for(home: str, secret: str = SECRET, scheduler_directory: str = "/tmp/s", site: str = "local") -> dict:
    job = NotebookJob.from_environ(ENV)
    request = dp.preset_request(SITES[site], "cpu-workers", job, ALICE, {})
    return dp.cluster_kwargs(
        SITES[site],
        request,
        job,
        45,
        home,
        "/opt/v/bin/python",
        dashboard_secret=secret,
        scheduler_directory=scheduler_directory,
    )


def get(url: str):
    """(status, headers, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def test_the_arguments_seal_the_dashboard_and_give_workers_no_dashboard_and_their_own_scratch():
    kwargs = kwargs_for("/home/alice")
    options = kwargs["scheduler_options"]
    assert options["dashboard_address"] == "127.0.0.1:0" and options["http_prefix"] == f"/{SECRET}"
    assert options["local_directory"] == "/tmp/s"
    assert kwargs["scheduler_cls"] is dp.sealed_scheduler_class()
    assert kwargs["local_directory"] == '"$AIFA_DASK_SCRATCH"'
    args = kwargs["worker_extra_args"]
    assert "--no-dashboard" in args and args[args.index("--dashboard-address") + 1] == "127.0.0.1:0"
    assert args[args.index("--preload") + 1] == "/home/alice/.aifa-workbench/dask-tls/aifa_dask_worker_setup.py"
    assert args[args.index("--preload-nanny") + 1] == "/home/alice/.aifa-workbench/dask-tls/aifa_dask_worker_setup.py"
    prologue = "\n".join(kwargs["job_script_prologue"])
    assert 'mktemp -d "/tmp/aifa-dask-XXXXXXXXXX"' in prologue and 'export TMPDIR="$AIFA_DASK_SCRATCH"' in prologue
    assert SECRET not in repr({k: v for k, v in kwargs.items() if k != "scheduler_options"})  # not for the job
    assert (
        dp.dashboard_link(4321, f"/{SECRET}", {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"})
        == f"/user/alice/proxy/4321/{SECRET}/status"
    )


def test_the_job_script_has_no_secret_and_the_worker_command_no_dashboard(tmp_path):
    home = tmp_path / "alice"
    (home / dp.PRIVATE_DIRECTORY).mkdir(parents=True, mode=0o700)
    cluster = dp.cluster_class()(**kwargs_for(str(home), scheduler_directory=str(tmp_path / "s")))
    try:
        assert type(cluster).__name__ == "SLURMCluster"  # dask-labextension lists it by this name
        script = cluster.job_script()
        port = cluster.scheduler.http_server.port
        assert cluster.dashboard_link == f"/proxy/{port}/{SECRET}/status"
        assert cluster.scheduler.local_directory.startswith(str(tmp_path / "s") + "/")
    finally:
        cluster.close()
    assert SECRET not in script
    lines = script.strip().splitlines()
    note = lines.index(dp.WORKER_COMMAND_NOTE)
    assert "distributed.cli.dask_worker" in lines[note + 1]
    assert max(map(len, lines[note + 1 :])) < 200  # one option per line, not 400 characters
    command = script.strip().split(dp.WORKER_COMMAND_NOTE)[1].replace(" \\\n    --", " --").strip()
    assert "--no-dashboard --dashboard-address 127.0.0.1:0" in command
    assert '--local-directory "$AIFA_DASK_SCRATCH"' in command


async def test_the_scheduler_dashboard_answers_only_under_its_secret_prefix(tmp_path):
    Scheduler = dp.sealed_scheduler_class()
    async with Scheduler(
        dashboard_address="127.0.0.1:0", http_prefix=f"/{SECRET}", host="127.0.0.1", local_directory=str(tmp_path)
    ) as scheduler:
        base = f"http://127.0.0.1:{scheduler.http_server.port}"
        import asyncio

        for path in OUTSIDE:
            code, headers, body = await asyncio.to_thread(get, base + path)
            assert code == 404, (path, code, headers)
            assert SECRET not in body and SECRET not in str(headers), path
        for path in INSIDE:
            code, _, _ = await asyncio.to_thread(get, f"{base}/{SECRET}{path}")
            assert code == 200, path
        code, headers, _ = await asyncio.to_thread(get, f"{base}/{SECRET}")
        assert code in (301, 302) and headers["Location"].endswith(f"{SECRET}/status")
        code, _, page = await asyncio.to_thread(get, f"{base}/{SECRET}/status")
        # scripts relative to the page, so that they load through /user/<name>/proxy/<port>/<secret>/status
        assert 'src="static/js/bokeh.min.js' in page and f'src="/{SECRET}' not in page
        script = page.split('src="', 1)[1].split('"', 1)[0]
        assert (await asyncio.to_thread(get, f"{base}/{SECRET}/{script}"))[0] == 200


def test_the_scheduler_refuses_to_start_without_a_secret():
    with pytest.raises(ValueError, match="secret http_prefix"):
        dp.sealed_scheduler_class()(dashboard_address="127.0.0.1:0", http_prefix="/")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_worker_with_the_preload_serves_no_http(tmp_path):
    from distributed import Scheduler, Worker

    setup = dp.write_worker_setup(str(tmp_path))
    assert stat.S_IMODE(os.stat(setup).st_mode) == 0o600
    async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1", local_directory=str(tmp_path)) as s:
        async with Worker(
            s.address,
            dashboard=False,
            dashboard_address="127.0.0.1:0",
            preload=[setup],
            local_directory=str(tmp_path / "w"),
            host="127.0.0.1",
        ) as worker:
            port = worker.http_server.port
            assert worker.aifa_tls_guard is True
            assert not listening(port) and "dashboard" not in worker.service_ports
            assert "dashboard" not in s.workers[worker.address].services
        async with Worker(
            s.address, dashboard=False, dashboard_address="127.0.0.1:0", local_directory=str(tmp_path / "w")
        ) as plain:
            assert listening(plain.http_server.port)  # what Dask does without it


async def test_a_nanny_takes_the_preload_too_and_its_tls_reads_start_clean(tmp_path):
    """The nanny has TLS comms of its own (to the scheduler, to its worker): the preload installs
    the guard against stale OpenSSL errors there (extensions/tls_error_queue.py) and finds no
    dashboard to close."""
    from distributed import Nanny, Scheduler
    from tornado.iostream import SSLIOStream

    setup = dp.write_worker_setup(str(tmp_path))
    async with Scheduler(dashboard_address="127.0.0.1:0", host="127.0.0.1", local_directory=str(tmp_path)) as s:
        async with Nanny(
            s.address, preload_nanny=[setup], local_directory=str(tmp_path / "n"), host="127.0.0.1", dashboard=False
        ) as nanny:
            assert nanny.status.name == "running" and len(s.workers) == 1
            assert nanny.aifa_tls_guard is True  # the preload ran in the nanny, and its guard is on
    assert getattr(SSLIOStream, "_aifa_empties_openssl_errors", False)


def run_prologue(base, then: str = "") -> subprocess.CompletedProcess:
    lines = dp.scratch_prologue(str(base))
    return subprocess.run(["bash", "-c", "\n".join([*lines, then])], capture_output=True, text=True, timeout=30)


def test_each_worker_job_makes_its_own_0700_scratch_removes_it_and_never_takes_an_existing_one(tmp_path):
    (tmp_path / "dask-scratch-space").mkdir(mode=0o777)  # another user's directories at fixed names
    (tmp_path / "aifa-dask-XXXXXXXXXX").mkdir(mode=0o777)
    shown = [run_prologue(tmp_path, 'stat -c "%n %a %u" "$AIFA_DASK_SCRATCH"; echo "$TMPDIR"') for _ in range(3)]
    assert all(r.returncode == 0 for r in shown), [r.stderr for r in shown]
    dirs = set()
    for result in shown:
        (name, mode, uid), tmpdir = result.stdout.split("\n")[0].split(), result.stdout.split("\n")[1]
        assert name.startswith(f"{tmp_path}/aifa-dask-") and name != f"{tmp_path}/aifa-dask-XXXXXXXXXX"
        assert (mode, int(uid), tmpdir) == ("700", os.getuid(), name)
        assert not os.path.exists(name)  # removed when the job ended
        dirs.add(name)
    assert len(dirs) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aifa-dask-XXXXXXXXXX", "dask-scratch-space"]


def test_a_job_that_cannot_make_its_scratch_stops_with_a_sentence(tmp_path):
    result = run_prologue(tmp_path / "missing", "echo started")
    assert result.returncode == 1 and "started" not in result.stdout
    assert "cannot create a private Dask scratch directory" in result.stderr


def test_a_killed_worker_job_still_removes_its_scratch(tmp_path):
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join([*dp.scratch_prologue(str(tmp_path)), 'echo "$AIFA_DASK_SCRATCH"', "sleep 30"])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        scratch = proc.stdout.readline().strip()
        assert os.path.isdir(scratch)
        deadline = time.monotonic() + 10  # the job's command (here: sleep) is running
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # what Slurm sends every process of the job first
        proc.wait(timeout=10)
        assert not os.path.exists(scratch)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
