"""The Slurm relay of container environments (extensions/slurm_relay.py): a real relay process
and real stand-ins, with stand-in Slurm commands of this test (scripts that print what they got)."""

import os
import select
import subprocess
import sys
import time

import pytest

from aifa_workbench.extensions.slurm_relay import (
    COMMANDS,
    MAX_REQUEST,
    RelayError,
    encode_request,
    exit_code,
    parse_request,
    remove_ended_relays,
    same_directory,
)

pytestmark = pytest.mark.unit

FAKE_SLURM = {
    # prints its argv one per line between brackets, its working directory and its stdin
    "sbatch": '#!/bin/bash\nfor a in "$@"; do printf "[%s]\\n" "$a"; done; echo "cwd=$PWD fmt=${SBATCH_X:-} home=${HOME_X:-}"; '
    'cat; echo oops >&2; exit 3\n',
    # (the relay's own question at its start, -h ..., is answered with no job)
    "squeue": '#!/bin/bash\n[ "$1" = -h ] && exit 0; sleep 60 & echo $! > "$1"; wait\n',
    "scancel": "#!/bin/bash\nexit 0\n",
}


@pytest.fixture
def relay(tmp_path):
    slurm_bin, directory = tmp_path / "slurm", tmp_path / "relay"
    slurm_bin.mkdir()
    directory.mkdir(mode=0o700)
    for name, text in FAKE_SLURM.items():
        (slurm_bin / name).write_text(text)
        (slurm_bin / name).chmod(0o755)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aifa_workbench.extensions.slurm_relay",
            "serve",
            str(directory),
            str(slurm_bin),
            sys.executable,
        ]
    )
    deadline = time.monotonic() + 30
    while not (directory / "socket").exists():
        assert time.monotonic() < deadline and process.poll() is None, "the relay did not start"
        time.sleep(0.05)
    yield directory, process
    process.kill()
    process.wait()


def standin(directory, command, *args, stdin=None, **kwargs):
    return subprocess.run(
        [str(directory / "bin" / command), *args], input=stdin, capture_output=True, timeout=60, **kwargs
    )


def test_a_standin_runs_the_nodes_command_with_its_argv_as_given_and_its_own_input_and_output(relay, tmp_path):
    directory, _ = relay
    assert sorted(os.listdir(directory / "bin")) == sorted(COMMANDS)
    assert all(oct((directory / "bin" / c).stat().st_mode & 0o777) == "0o700" for c in COMMANDS)
    hostile = ["--job-name=a b", "'; touch /tmp/pwned #", "$(id)", "line\nbreak", ""]
    env = {**os.environ, "SBATCH_X": "passed", "HOME_X": "not passed"}
    done = standin(directory, "sbatch", *hostile, stdin=b"#!/bin/bash\nhostname\n", cwd=tmp_path, env=env)
    assert done.returncode == 3 and done.stderr == b"oops\n"
    expected = "".join(f"[{a}]\n" for a in hostile) + f"cwd={tmp_path} fmt=passed home=\n#!/bin/bash\nhostname\n"
    assert done.stdout.decode() == expected
    assert not os.path.exists("/tmp/pwned")


def test_what_the_relay_refuses_or_cannot_run_is_said_on_the_callers_stderr(relay, tmp_path):
    directory, _ = relay
    done = standin(directory, "sbatch", *["x" * 100_000] * 11)  # each under the kernel's limit of one argument
    assert done.returncode == 1 and b"over 1024 KiB, which the relay refuses" in done.stderr
    done = standin(directory, "sinfo")  # not on this node (the test's Slurm has three commands)
    assert done.returncode == 127 and b"sinfo: No such file or directory" in done.stderr


def test_a_caller_that_goes_away_stops_its_command_and_the_relay_outlives_slurms_term(relay, tmp_path):
    directory, process = relay
    pid_file = tmp_path / "squeue.pid"
    caller = subprocess.Popen([str(directory / "bin" / "squeue"), str(pid_file)])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    command_pid = int(pid_file.read_text())  # what the command started: its whole session stops
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{command_pid}") and "zombie" not in _state(command_pid):
        assert time.monotonic() < deadline, "the command outlived its caller"
        time.sleep(0.05)
    assert process.poll() is None and standin(directory, "scancel", "42").returncode == 0


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return status.read()
    except OSError:
        return "zombie"


def test_without_its_relay_a_standin_says_so(tmp_path, relay):
    directory, process = relay
    process.kill()
    process.wait()
    done = standin(directory, "squeue")
    assert done.returncode == 1 and b"the job's Slurm relay is not answering" in done.stderr


def test_requests_are_checked_and_refused_whole_not_cut():
    with pytest.raises(RelayError, match="over 1024 KiB"):
        encode_request("sbatch", ["x" * MAX_REQUEST], "/home/a", {})
    good = encode_request("squeue", ["--me"], "/home/a", {"SQUEUE_FORMAT": "%i", "LD_PRELOAD": "/x.so"})[4:]
    request = parse_request(good)
    assert request.args == ("--me",) and request.env == {"SQUEUE_FORMAT": "%i"}  # Slurm's input variables only
    for bad, reason in [
        (b'{"command": "bash", "args": [], "cwd": "/", "env": {}}', "not one of the Slurm commands"),
        (b'{"command": "../../bin/sh", "args": [], "cwd": "/", "env": {}}', "not one of the Slurm commands"),
        (b'{"command": "squeue", "args": [1], "cwd": "/", "env": {}}', "must be strings"),
        (b'{"command": "squeue", "args": [], "cwd": "tmp", "env": {}}', "absolute path"),
        (b'{"command": "squeue", "args": [], "cwd": "/", "env": {"A": 1}}', "variables must be strings"),
        (b'{"command": "squeue"}', "malformed"),
        (b"[" * 100000 + b"]" * 100000, "malformed"),
        (b"not json", "malformed"),
    ]:
        with pytest.raises(RelayError, match=reason):
            parse_request(bad)


def test_a_command_a_signal_ended_exits_as_a_shell_says():
    assert (exit_code(0), exit_code(3), exit_code(-9), exit_code(-15)) == (0, 3, 137, 143)


def test_a_working_directory_is_taken_only_if_it_is_the_one_the_caller_holds(tmp_path):
    """Inside the image a path may be a folder of the image's (or a private /tmp) while out here
    the same name is another user's: the caller's open directory decides."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    held = os.open(tmp_path / "mine", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert same_directory(str(tmp_path / "mine"), held)
        assert not same_directory(str(tmp_path / "theirs"), held)
        assert not same_directory(str(tmp_path / "gone"), held)
    finally:
        os.close(held)


def test_a_relay_removes_the_folders_of_the_users_jobs_that_slurm_no_longer_runs(tmp_path, monkeypatch):
    # left when Slurm killed a batch script before its last line: the next relay clears them
    slurm_bin, home = tmp_path / "slurm", tmp_path / "aifa"
    slurm_bin.mkdir()
    home.mkdir()
    squeue = slurm_bin / "squeue"
    # Slurm knows jobs 4 and 5; while it answers, job 6 starts and makes its folder
    squeue.write_text(
        '#!/bin/sh\necho "$@" "states=${SQUEUE_STATES:-}" > "$0.args"\n'
        f'mkdir -p {home}/slurm-relay-lumi-6-n1n2n3n4\nprintf "4\\n5\\n"\n'
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("SQUEUE_STATES", "RUNNING")  # would hide a pending job's id
    own, ended, live = (home / f"slurm-relay-lumi-{n}" for n in ("5-abcdEFGH", "3-x1x2x3x4", "4-y1y2y3y4"))
    elsewhere = home / "slurm-relay-other-3-z1z2z3z4"  # another cluster's job 3, in a home both share
    for folder in (own, ended, live, elsewhere, home / "notes"):
        (folder / "bin").mkdir(parents=True)
    kept = tmp_path / "kept"
    kept.mkdir()
    (home / "slurm-relay-lumi-2-linklink").symlink_to(kept)  # a link is never followed nor removed
    assert remove_ended_relays(str(own), str(slurm_bin)) == [ended.name]
    assert sorted(p.name for p in home.iterdir()) == sorted(
        [own.name, live.name, elsewhere.name, "notes", "slurm-relay-lumi-2-linklink", "slurm-relay-lumi-6-n1n2n3n4"]
    )
    assert kept.is_dir()
    assert (squeue.parent / "squeue.args").read_text().split() == [
        "-h",
        "-a",
        "-u",
        str(os.getuid()),
        "-o",
        "%A",
        "states=",
    ]
    squeue.write_text("#!/bin/sh\nexit 1\n")  # Slurm cannot say: nothing goes
    (ended / "bin").mkdir(parents=True)
    assert remove_ended_relays(str(own), str(slurm_bin)) == [] and ended.is_dir()


def test_a_relay_clears_ended_jobs_folders_once_it_listens(tmp_path):
    slurm_bin, home = tmp_path / "slurm", tmp_path / "aifa"
    slurm_bin.mkdir()
    home.mkdir()
    (slurm_bin / "squeue").write_text("#!/bin/sh\necho 9\n")
    (slurm_bin / "squeue").chmod(0o755)
    own, ended = home / "slurm-relay-lumi-9-abcdEFGH", home / "slurm-relay-lumi-3-x1x2x3x4"
    own.mkdir(mode=0o700)
    ended.mkdir()
    argv = [sys.executable, "-m", "aifa_workbench.extensions.slurm_relay", "serve", str(own), str(slurm_bin), "python3"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while ended.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the ended job's folder stayed"
            time.sleep(0.05)
        assert (own / "socket").exists()
        # the job's log says so (once the folder is gone)
        assert select.select([process.stderr], [], [], 30)[0], "the relay said nothing"
        said = process.stderr.readline()
    finally:
        process.kill()
        process.communicate()
    assert f"removed {ended.name}, the Slurm relay folder of a job that has ended" in said
