"""Dask on a node shared with other users, for real. Alice's notebook side (a Slurm job of hers
running workbench.dask_cluster, as a notebook would) starts a preset cluster with a Slurm worker
job while carol, on the same node, has planted 0777 directories where scratch space used to go
and tries alice's dashboard port on the loopback: carol reads nothing and finds the secret
nowhere; alice's worker serves no HTTP and works in a fresh 0700 directory of its own, removed
when its job ends. Then, through a real hub: the dashboard link works for alice's login only."""

import ast
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from .hubs import wait_ready
from .jupyter_client_helpers import Kernel

pytestmark = pytest.mark.slurm

ALICE = pwd.getpwnam("alice")
CAROL_UID = pwd.getpwnam("carol").pw_uid
VENV_PYTHON = "/opt/aifa-workbench/venv/bin/python"
# Paths a Dask cluster with a fixed scratch name would adopt, and guesses at the new names.
PLANTED = [
    "/tmp/dask-scratch-space",
    f"/tmp/dask-scratch-space-{ALICE.pw_uid}",
    "/tmp/aifa-dask-XXXXXXXXXX",
    *(f"/tmp/aifa-dask-{secrets.token_hex(5)}" for _ in range(3)),
    f"/tmp/aifa-dask-scheduler-{secrets.token_hex(4)}",
]
OUTSIDE = [
    "/",
    "/status",
    "/info",
    "/info/main/workers.html",
    "/info/main/logs.html",
    "/json/index.html",
    "/json/identity.json",
    "/metrics",
    "/sitemap.json",
    "/statics/css/base.css",
    "/individual-plots.json",
    "/health",
    "/api/v1",
    "/api/v1/version",
    "/static/js/bokeh.min.js",
    "/status/ws",
]

# Run by carol on the node: {path: [status, whether the answer names the secret]} for each path.
CAROL_PROBE = r"""
import json, sys, urllib.error, urllib.request
port, secret, paths = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None
opener = urllib.request.build_opener(NoRedirect)
out = {}
for path in paths:
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            code, text = r.status, str(dict(r.headers)) + r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        code, text = e.code, str(dict(e.headers)) + e.read().decode(errors="replace")
    out[path] = [code, secret in text]
print(json.dumps(out))
"""

# Alice's side, in a Slurm job of hers: what a notebook does, then the facts the test checks;
# the cluster stays up until the test says it is done.
ALICE_NOTEBOOK = r"""
import json, os, sys, time, urllib.request
import workbench
from distributed import Client

facts_path, done_path = sys.argv[1], sys.argv[2]
cluster = workbench.dask_cluster("cpu-workers", workers=1)
client = Client(cluster)
client.wait_for_workers(1, timeout=180)

def where_i_work(dask_worker):
    path, chain = dask_worker.local_directory, []
    while path not in ("/", "/tmp"):
        st = os.lstat(path)
        chain.append([path, st.st_uid, oct(st.st_mode & 0o7777), os.path.islink(path)])
        path = os.path.dirname(path)
    return {"local_directory": dask_worker.local_directory, "chain": chain, "pid": os.getpid(),
            "tmpdir": os.environ.get("TMPDIR"), "job": os.environ.get("SLURM_JOB_ID")}

prefix = cluster.scheduler_spec["options"]["http_prefix"]
port = cluster.scheduler.http_server.port
with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}/status", timeout=10) as r:
    own = [r.status, "Dask" in r.read().decode()]
(address, worker), = client.scheduler_info()["workers"].items()
top = "/".join(cluster.scheduler.local_directory.split("/")[:3])
facts = {"prefix": prefix, "port": port, "link": cluster.dashboard_link, "script": cluster.job_script(),
         "worker": list(client.run(where_i_work).values())[0], "worker_address": address,
         "nanny_address": worker["nanny"], "worker_services": worker.get("services", {}),
         "scheduler_top": [top, os.stat(top).st_uid, oct(os.stat(top).st_mode & 0o7777)], "own": own}
with open(facts_path + ".part", "w") as f:
    json.dump(facts, f)
os.replace(facts_path + ".part", facts_path)
deadline = time.monotonic() + 300
while not os.path.exists(done_path) and time.monotonic() < deadline:
    time.sleep(0.5)
client.close()
cluster.close()
"""


def as_user(user: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=120, **kwargs)


def user_jobs(user: str, name: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--user={user}", f"--name={name}", "--format=%i"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def wait_until(done, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(step)
    return bool(done())


def job_pids(job_id: str) -> set[int]:
    """Every process of the Slurm job (batch shell, nanny, worker, helpers): root reads their environment."""
    import psutil

    pids = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SLURM_JOB_ID") == job_id:
                pids.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return pids


def listening_addresses(pids: set[int]) -> set[str]:
    """'address:port' of every listening TCP socket of `pids` (ss as root sees every process)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {
        line.split()[3] for line in out.splitlines() if any(int(pid) in pids for pid in re.findall(r"pid=(\d+)", line))
    }


@pytest.fixture
def carols_directories():
    """carol's 0777 directories at the old fixed scratch paths and at guesses of the new ones."""
    made = []
    for path in PLANTED:
        if not os.path.exists(path):
            as_user("carol", "mkdir", "-m", "0777", path)
            if Path(path).exists() and Path(path).stat().st_uid == CAROL_UID:
                made.append(path)
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def alices_notebook(cluster):
    """Start ALICE_NOTEBOOK in a Slurm job of alice's; yields (facts, done) once her cluster is up."""
    folder = Path(ALICE.pw_dir) / ".aifa-workbench" / f"test-dask-node-{secrets.token_hex(4)}"
    made = as_user(
        "alice", "mkdir", "-p", "-m", "0700", str(folder)
    )  # as alice: root must not own her ~/.aifa-workbench
    assert made.returncode == 0, made.stderr
    script, facts, done = folder / "notebook.py", folder / "facts.json", folder / "done"
    script.write_text(ALICE_NOTEBOOK)
    os.chown(script, ALICE.pw_uid, ALICE.pw_gid)
    env = (
        f"HOME={ALICE.pw_dir} USER=alice PATH=/opt/aifa-workbench/venv/bin:/usr/bin:/bin "
        "AIFA_WORKBENCH_SITE=local AIFA_WORKBENCH_ENVIRONMENT=workbench AIFA_WORKBENCH_SLURM_BIN=/usr/bin "
        "JUPYTERHUB_SERVICE_PREFIX=/user/alice/"
    )
    submitted = as_user(
        "alice",
        "sbatch",
        "--parsable",
        "-J",
        "aifa-test-dask-node",
        "-p",
        "cpu",
        "-A",
        "proj_sme",
        "-c",
        "1",
        "--mem=2G",
        "-t",
        "00:20:00",
        "--export=NONE",
        "-D",
        str(folder),
        "-o",
        str(folder / "job.log"),
        f"--wrap=env {env} {VENV_PYTHON} {script} {facts} {done}",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        up = wait_until(lambda: facts.exists() or not user_jobs("alice", "aifa-test-dask-node"), 240, 1)
        log = (folder / "job.log").read_text() if (folder / "job.log").exists() else ""
        assert up and facts.exists(), f"alice's cluster did not come up:\n{log[-3000:]}"
        yield json.loads(facts.read_text()), done
    finally:
        done.touch()
        if not wait_until(lambda: not user_jobs("alice", "aifa-test-dask-node"), 60, 1):
            subprocess.run(["scancel", job_id])
        wait_until(lambda: not user_jobs("alice", "aifa-dask-alice"), 60, 1)
        shutil.rmtree(folder, ignore_errors=True)


def test_carol_on_the_node_can_neither_read_alices_dashboard_nor_hand_her_workers_a_directory(
    carols_directories, alices_notebook
):
    assert carols_directories, "carol could not plant a single directory"
    facts, done = alices_notebook
    prefix, port, worker = facts["prefix"], facts["port"], facts["worker"]
    secret = prefix.strip("/")
    assert len(secret) >= 24 and facts["own"] == [200, True]  # alice, on the node, with the prefix
    assert facts["link"] == f"/user/alice/proxy/{port}/{secret}/status"

    # (a) carol on the loopback: 404 for every path, nothing that names the secret
    guesses = [f"/{secret[:-1]}/status", f"/{secret.swapcase()}/status", f"/{secret}x/status", f"/x{prefix}/status"]
    probe = as_user("carol", "/usr/bin/python3", "-c", CAROL_PROBE, str(port), secret, json.dumps(OUTSIDE + guesses))
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    assert all(code == 404 and not leaks for code, leaks in answers.values()), answers
    # ...and the secret is in no command line, and in no file or process listing carol can read
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"), pid
        except (FileNotFoundError, ProcessLookupError):
            pass
    assert secret not in as_user("carol", "ps", "-eo", "args").stdout
    found = as_user(
        "carol",
        "grep",
        "-rlFs",
        "-D",
        "skip",
        secret,
        "/tmp",
        "/var/tmp",
        "/dev/shm",
        "/home",
        "/var/log",
        "/var/lib/aifa-workbench",
    )
    assert found.stdout == "", found.stdout
    assert secret not in facts["script"]

    # (b) the worker job listens on nothing but the worker's and the nanny's TLS ports, on loopback
    command = facts["script"].replace(" \\\n    --", " --").strip().splitlines()[-1]  # one option per line
    assert "--no-dashboard --dashboard-address 127.0.0.1:0" in command and not facts["worker_services"]
    pids = job_pids(worker["job"])
    assert worker["pid"] in pids and len(pids) >= 3, pids  # batch shell, nanny, worker
    listening = listening_addresses(pids)
    ports = {facts["worker_address"].rsplit(":", 1)[1], facts["nanny_address"].rsplit(":", 1)[1]}
    assert {a.rsplit(":", 1)[1] for a in listening} == ports, (listening, ports)
    assert all(a.startswith("127.0.0.1:") for a in listening), listening

    # (c) the worker's directory: fresh, alice's, 0700, not one of carol's; the scheduler's too
    scratch, uid, mode, link = worker["chain"][-1]
    assert scratch.startswith("/tmp/aifa-dask-") and scratch not in PLANTED
    assert (uid, mode, link) == (ALICE.pw_uid, "0o700", False) and worker["tmpdir"] == scratch
    assert all(entry[1] == ALICE.pw_uid and not entry[3] for entry in worker["chain"]), worker["chain"]
    assert worker["local_directory"].startswith(scratch + "/dask-scratch-space/worker-")
    top, uid, mode = facts["scheduler_top"]
    assert top.startswith("/tmp/aifa-dask-scheduler-") and top not in PLANTED
    assert (uid, mode) == (ALICE.pw_uid, "0o700")
    for path in carols_directories:  # untouched by alice's cluster
        assert os.listdir(path) == [] and stat.S_IMODE(os.stat(path).st_mode) == 0o777, path

    done.touch()  # alice closes her cluster
    assert wait_until(lambda: not user_jobs("alice", "aifa-dask-alice"), 90, 1)
    assert wait_until(lambda: not os.path.exists(scratch), 30)  # the job removed its scratch
    assert wait_until(lambda: not user_jobs("alice", "aifa-test-dask-node"), 60, 1)
    assert not os.path.exists(top)  # and the notebook side its own


@pytest.fixture
def alice_server(hub):
    token = hub.user_token("alice")
    hub.api("POST", "users/alice/server", token=token, json={"partition": "cpu", "cpus": 2, "memory_gb": 4})
    wait_ready(hub, "alice")
    yield hub.server_url("alice"), token
    hub.api("DELETE", "users/alice/server", timeout=120)


def test_through_the_hub_the_dashboard_answers_alices_login_under_its_secret_only(hub, alice_server):
    server, token = alice_server
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server))  # the link is a path on alice's server's origin
    alice = {"Authorization": f"token {token}"}
    with Kernel(server, token, timeout=240) as kernel:
        kernel.run("import json, workbench\ncluster = workbench.dask_cluster('cpu-workers', workers=0)")
        link, port = json.loads(
            ast.literal_eval(kernel.run("json.dumps([cluster.dashboard_link, cluster.scheduler.http_server.port])"))
        )
        try:
            assert re.fullmatch(rf"{urlsplit(server).path}proxy/{port}/[A-Za-z0-9_-]{{32}}/status", link), link
            page = requests.get(origin + link, headers=alice, timeout=30)
            assert page.status_code == 200 and "Dask" in page.text, (page.url, page.text[:300])
            script = re.search(r'<script src="([^"]*bokeh\.min\.js[^"]*)"', page.text).group(1)
            js = requests.get(urljoin(origin + link, script), headers=alice, timeout=30)
            assert js.status_code == 200 and len(js.content) > 100_000  # the page's scripts load through the hub
            workers = requests.get(urljoin(origin + link, "info/main/workers.html"), headers=alice, timeout=30)
            assert workers.status_code == 200
            carol = requests.get(
                origin + link,
                headers={"Authorization": f"token {hub.user_token('carol')}"},
                timeout=30,
                allow_redirects=False,
            )
            assert carol.status_code in (302, 403) and "Dask" not in carol.text
            anonymous = requests.get(origin + link, timeout=30, allow_redirects=False)
            assert anonymous.status_code in (302, 403) and "Dask" not in anonymous.text
            for path in ("status", "info/main/workers.html", "metrics", "sitemap.json"):  # without the secret
                assert (
                    requests.get(
                        f"{origin}{urlsplit(server).path}proxy/{port}/{path}", headers=alice, timeout=30
                    ).status_code
                    == 404
                ), path
        finally:
            kernel.run("cluster.close()")
