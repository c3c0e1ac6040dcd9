"""The installed aifa-hubctl, run by root, trusts no file the hub's user can write: it writes no
log through a link that user planted, signals no process a PID file names unless it is the hub's
own, and reads secrets as the hub's user. Runs the demo hub (its state, its port): stopped before
each test and again after it."""

import pwd
import stat
import subprocess
import time
from pathlib import Path

from urllib.parse import urlsplit

import pytest
import requests
import yaml

pytestmark = pytest.mark.slurm

HUBCTL = Path("/usr/local/sbin/aifa-hubctl")
HUB_USER = "aifa-hub"
STATE = Path("/var/lib/aifa-workbench")
RUN = Path("/run/aifa-workbench")
SECRETS = Path("/etc/aifa-workbench/secrets")


def hubctl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUBCTL), *args], capture_output=True, text=True, timeout=timeout)


def as_hub(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={HUB_USER}", f"--regid={HUB_USER}", "--init-groups", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )


def hub_uid() -> int:
    return pwd.getpwnam(HUB_USER).pw_uid


def uids_of(pid: int) -> list[int]:
    line = next(s for s in Path(f"/proc/{pid}/status").read_text().splitlines() if s.startswith("Uid:"))
    return [int(u) for u in line.split()[1:]]


def writers(log: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-u", HUB_USER, "-f", f"log-to {log}"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


@pytest.fixture
def demo_hub(cluster):
    """The demo hub's URL; the hub is stopped before the test and after it."""
    if not HUBCTL.exists():
        pytest.skip("aifa-hubctl is not installed (make install)")
    settings = yaml.safe_load(Path("/etc/aifa-workbench/workbench.yaml").read_text())
    url = settings["public_host"] + urlsplit(settings["bind_url"]).path  # the hub's public URL
    hubctl("stop")
    assert hubctl("status").returncode == 3, "the demo hub is still running"
    yield url
    hubctl("stop")
    for name in ("hub.log", "proxy.log", "hubctl.pid", "proxy-own.pid"):
        if (STATE / name).is_symlink() or name.endswith(".pid"):
            (STATE / name).unlink(missing_ok=True)


def test_logs_are_not_written_through_links_the_hub_user_planted(demo_hub, tmp_path):
    target = tmp_path / "root-owned"
    target.write_text("root's file\n")
    target.chmod(0o644)
    before = target.stat()
    for name in ("hub.log", "proxy.log"):
        assert as_hub("ln", "-sfn", str(target), str(STATE / name)).returncode == 0
    started = hubctl("start")
    hubctl("stop")
    assert target.read_text() == "root's file\n"
    assert target.stat().st_mtime_ns == before.st_mtime_ns and target.stat().st_size == before.st_size
    assert started.returncode != 0 and "symbolic link" in started.stderr, started.stdout + started.stderr


def test_the_pid_directory_is_written_by_root_only(demo_hub):
    hubctl("status")
    st = RUN.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    planted = as_hub("touch", str(RUN / "hub.pid"))
    assert planted.returncode != 0 and "Permission denied" in planted.stderr


def test_stop_signals_no_process_that_is_not_the_hubs_and_says_so(demo_hub):
    root_sleep = subprocess.Popen(["sleep", "300"])
    hub_user_sleep = subprocess.Popen(
        ["setpriv", f"--reuid={HUB_USER}", f"--regid={HUB_USER}", "--init-groups", "--", "sleep", "300"]
    )
    try:
        (RUN / "hub.pid").write_text(f"{root_sleep.pid}\n")
        (RUN / "proxy.pid").write_text(f"{hub_user_sleep.pid}\n")
        for legacy in ("hubctl.pid", "proxy-own.pid"):  # where the hub's user could write them before
            assert as_hub("sh", "-c", f"echo {root_sleep.pid} > {STATE / legacy}").returncode == 0
        stopped = hubctl("stop")
        time.sleep(0.5)
        assert root_sleep.poll() is None and hub_user_sleep.poll() is None, "aifa-hubctl killed a process"
        assert f"names process {root_sleep.pid}, which is not the hub" in stopped.stderr, stopped.stderr
        assert f"names process {hub_user_sleep.pid}, which is not the proxy" in stopped.stderr
        assert "not signalling it" in stopped.stderr
        assert not (RUN / "hub.pid").exists() and not (RUN / "proxy.pid").exists()
        assert hubctl("status").returncode == 3
    finally:
        for proc in (root_sleep, hub_user_sleep):
            proc.kill()
            proc.wait()


def test_info_reads_the_secret_as_the_hub_user_not_through_a_link_as_root(demo_hub, tmp_path):
    root_only = tmp_path / "root-only"
    root_only.write_text("ROOT-SECRET\n")
    root_only.chmod(0o600)
    secret, backup = SECRETS / "demo-password", SECRETS / "demo-password.test-backup"
    original = secret.read_bytes()
    assert as_hub("mv", str(secret), str(backup)).returncode == 0
    try:
        assert as_hub("ln", "-s", str(root_only), str(secret)).returncode == 0
        shown = hubctl("info")
        assert "ROOT-SECRET" not in shown.stdout + shown.stderr
        assert "AIFA Workbench is running at" in shown.stdout
    finally:
        restored = as_hub("mv", "-f", str(backup), str(secret))
        assert restored.returncode == 0, restored.stderr
    assert not secret.is_symlink() and secret.read_bytes() == original
    assert secret.stat().st_uid == hub_uid()


def test_start_logs_as_the_hub_user_and_stop_ends_hub_proxy_tunnel_daemon_and_writers(demo_hub):
    old_log = STATE / "hub.log"  # as the previous aifa-hubctl left it: written by root
    old_log.unlink(missing_ok=True)
    old_log.write_text("an old log of root's\n")
    old_log.chmod(0o644)
    started = hubctl("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"AIFA Workbench is running at {demo_hub}" in started.stdout
    assert requests.get(demo_hub + "hub/api/", timeout=10).status_code == 200
    pids = {}
    for name, command in (
        ("hub.pid", "bin/jupyterhub"),
        ("proxy.pid", "configurable-http-proxy"),
        ("tunneld.pid", "bin/aifa-workbench tunneld"),
    ):
        assert (RUN / name).stat().st_uid == 0
        pid = pids[name] = int((RUN / name).read_text())
        assert uids_of(pid) == [hub_uid()] * 4
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert command in cmdline and "log-to" not in cmdline  # the process itself, not its log writer
    assert hubctl("status").stdout.splitlines() == [
        f"The proxy is running (pid {pids['proxy.pid']}).",
        f"The tunnel daemon is running (pid {pids['tunneld.pid']}).",
        f"The hub is running (pid {pids['hub.pid']}) at {demo_hub}.",
    ]
    for log in (STATE / "hub.log", STATE / "proxy.log", STATE / "tunneld.log"):
        assert not log.is_symlink() and log.stat().st_uid == hub_uid()
        assert len(writers(log)) == 1
    assert "Running JupyterHub version" in (STATE / "hub.log").read_text()
    assert (STATE / "hub.log.1").read_text() == "an old log of root's\n"  # rotated away, not appended to

    # an upgrade: the tunnel daemon alone restarts; the hub and the proxy keep running
    restarted = hubctl("restart-tunnels")
    assert restarted.returncode == 0 and "The tunnel daemon has restarted" in restarted.stdout, restarted.stderr
    new_tunneld = int((RUN / "tunneld.pid").read_text())
    assert new_tunneld != pids["tunneld.pid"] and uids_of(new_tunneld) == [hub_uid()] * 4
    assert (
        not Path(f"/proc/{pids['tunneld.pid']}/cmdline").exists()
        or not Path(f"/proc/{pids['tunneld.pid']}/cmdline").read_bytes()
    )
    pids["tunneld.pid"] = new_tunneld
    assert hubctl("status").stdout.splitlines()[2] == f"The hub is running (pid {pids['hub.pid']}) at {demo_hub}."

    stopped = hubctl("stop")
    assert stopped.returncode == 0 and "The hub has stopped" in stopped.stdout, stopped.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
    assert (
        writers(STATE / "hub.log") == [] and writers(STATE / "proxy.log") == [] and writers(STATE / "tunneld.log") == []
    )
    # the writer outlived the hub: the hub's last words are in the log when stop returns
    assert (STATE / "hub.log").read_text().rstrip().endswith("...done")
    assert not (RUN / "hub.pid").exists() and not (RUN / "proxy.pid").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(demo_hub + "hub/api/", timeout=5)
    for rotated in STATE.glob("hub.log.*"):  # leave no root-owned file of this test in the demo's state
        if rotated.stat().st_uid == 0 and rotated.read_text() == "an old log of root's\n":
            rotated.unlink()


def cullers(hub_pid: int | None = None) -> list[int]:
    """The idle cullers of the hub's user (of one hub, when its pid is given: other test hubs run too)."""
    found = subprocess.run(["pgrep", "-u", HUB_USER, "-f", "jupyterhub_idle_culler"], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    return pids if hub_pid is None else [p for p in pids if parent_of(p) == hub_pid]


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def gone(pids, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids):
            return True
        time.sleep(0.2)
    return False


def test_a_hub_killed_outright_leaves_no_culler_nor_log_writer_and_the_next_start_adds_none(demo_hub):
    started = hubctl("start")
    assert started.returncode == 0, started.stdout + started.stderr
    hub_pid = int((RUN / "hub.pid").read_text())
    deadline = time.monotonic() + 30
    while not (first := cullers(hub_pid)):
        assert time.monotonic() < deadline, "the hub started no idle culler"
        time.sleep(0.5)
    assert len(first) == 1
    writer = writers(STATE / "hub.log")
    subprocess.run(["kill", "-KILL", str(hub_pid)], check=True)
    assert gone(first), "the idle culler outlived the hub"
    assert gone(writer), "the hub's log writer outlived the hub"
    started = hubctl("start")
    assert started.returncode == 0, started.stdout + started.stderr
    new_pid = int((RUN / "hub.pid").read_text())
    deadline = time.monotonic() + 30
    while not cullers(new_pid):
        assert time.monotonic() < deadline, "the restarted hub started no idle culler"
        time.sleep(0.5)
    time.sleep(2)
    assert len(cullers(new_pid)) == 1 and len(writers(STATE / "hub.log")) == 1
    assert not [p for p in cullers() if parent_of(p) == 1], "a stray culler (its hub gone) is still running"
