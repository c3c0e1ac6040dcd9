"""Slurm's commands for a notebook inside a container image that holds none (LUMI's AI Factory
images: Slurm runs outside them), so that Dask presets and `squeue` work there as anywhere.

The batch script starts the relay outside the image, as the user, beside the server:

    python -m aifa_workbench.extensions.slurm_relay serve DIR SLURM_BIN INNER_PYTHON

DIR is a fresh 0700 directory of the user's (mktemp -d), seen inside the image at the same path:
the relay listens on DIR/socket and writes stand-ins for Slurm's commands into DIR/bin, which the
server inside the image finds first on its PATH (AIFA_WORKBENCH_SLURM_BIN). A stand-in sends its
argv, its working directory (the path, and the directory held open: a path the image mounts from
elsewhere is refused), Slurm's own input variables (SBATCH_*, SQUEUE_FORMAT, ...) and its stdin,
stdout and stderr themselves (SCM_RIGHTS); the relay runs the node's command with them (never a
shell) and answers its exit code. Only the user's processes can reach the socket (the
directory is theirs alone, and the relay checks the peer's uid the kernel reports); a caller that
goes away stops its command and what that started.

The batch script removes DIR when the job ends; should Slurm kill the script first, the folder is
left, and the next relay of the user's removes the folders of jobs Slurm no longer runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sacct", "sinfo", "sacctmgr")
# the variables Slurm's commands read as input, passed from the caller (the relay's own otherwise)
PASSED_PREFIXES = ("SBATCH_", "SQUEUE_", "SACCT_", "SINFO_", "SCANCEL_", "SCONTROL_", "SLURM_TIME_FORMAT")
MAX_REQUEST = 1 << 20  # argv, working directory and variables together: refused above, not cut
MAX_CALLS = 32  # at once; more wait for one of them to end
REQUEST_TIMEOUT = 10.0  # to send a request, once connected
COMMAND_TIMEOUT = 600.0
SOCKET = "socket"
# DIR's name as the batch script makes it: slurm-relay-<cluster>-<job id>-<mktemp's 8 characters>
FOLDER = re.compile(r"^slurm-relay-(?P<cluster>[A-Za-z0-9_.-]{1,64})-(?P<job>[0-9]{1,12})-[A-Za-z0-9]{8}$")
_LENGTH = struct.Struct("!I")
_CODE = struct.Struct("!i")


class RelayError(Exception):
    """A request the relay refuses, in a sentence for the caller's stderr."""


@dataclass(frozen=True)
class Request:
    command: str
    args: tuple[str, ...]
    cwd: str
    env: dict[str, str]


def passed_variables(environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(PASSED_PREFIXES)}


def encode_request(command: str, args: list[str], cwd: str, env: dict[str, str]) -> bytes:
    body = json.dumps({"command": command, "args": args, "cwd": cwd, "env": env}).encode("utf-8", "surrogateescape")
    if len(body) > MAX_REQUEST:
        raise RelayError(f"{command}: the arguments are over {MAX_REQUEST // 1024} KiB, which the relay refuses")
    return _LENGTH.pack(len(body)) + body


def parse_request(body: bytes) -> Request:
    """A request as the relay reads it: one of Slurm's commands, string arguments, a directory."""
    try:
        data = json.loads(body)
        command, args, cwd, env = data["command"], data["args"], data["cwd"], data["env"]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise RelayError(f"a malformed request ({type(error).__name__})") from None
    if command not in COMMANDS:
        raise RelayError(f"{str(command)[:40]!r} is not one of the Slurm commands the relay runs")
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise RelayError(f"{command}: the arguments must be strings")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise RelayError(f"{command}: the working directory must be an absolute path")
    if not isinstance(env, dict) or not all(
        isinstance(v, str) and "\0" not in v and "\0" not in k for k, v in env.items()
    ):
        raise RelayError(f"{command}: the variables must be strings")
    return Request(command, tuple(args), cwd, passed_variables(env))


def exit_code(returncode: int) -> int:
    """As a shell reports it: 128 + the signal for a command a signal ended."""
    return 128 - returncode if returncode < 0 else returncode


def standin(python: str) -> str:
    """A stand-in for one of Slurm's commands, run inside the image by its own Python."""
    return f"#!{python}\nfrom aifa_workbench.extensions.slurm_relay import call\n\ncall()\n"


# --- the relay, outside the image ---------------------------------------------------------------


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII"))
    return struct.unpack("iII", creds)[1]


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """The request frame and the caller's stdin, stdout, stderr and working directory (sent with
    its first bytes), within REQUEST_TIMEOUT in all."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    conn.settimeout(REQUEST_TIMEOUT)
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST + _LENGTH.size, 4)
    try:
        if len(fds) != 4 or len(data) < _LENGTH.size:
            raise RelayError("a request without its input, output and working directory")
        (length,) = _LENGTH.unpack(data[: _LENGTH.size])
        if length > MAX_REQUEST:
            raise RelayError(f"a request of {length} bytes, over the relay's {MAX_REQUEST}")
        while len(data) < _LENGTH.size + length:
            conn.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
            more = conn.recv(_LENGTH.size + length - len(data))
            if not more:
                raise RelayError("a request cut short")
            data += more
        if len(data) != _LENGTH.size + length:
            raise RelayError("more than the request")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return data[_LENGTH.size :], fds


def same_directory(path: str, fd: int) -> bool:
    """Whether `path`, here, is the directory the caller holds open (the image may mount a folder
    of the same name that another user made, out here)."""
    try:
        here, theirs = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (theirs.st_dev, theirs.st_ino)


def _run(request: Request, fds: list[int], slurm_bin: str, conn: socket.socket) -> int:
    try:
        if not same_directory(request.cwd, fds[3]):
            raise RelayError(
                f"{request.command}: the working directory {request.cwd} is not the same outside the image"
            )
        process = subprocess.Popen(
            [os.path.join(slurm_bin, request.command), *request.args],
            cwd=request.cwd,
            env={**os.environ, **request.env},
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            start_new_session=True,
        )
    finally:
        for fd in fds:
            os.close(fd)
    deadline = time.monotonic() + COMMAND_TIMEOUT
    conn.setblocking(False)
    while process.poll() is None:
        readable, _, _ = select.select([conn], [], [], 0.2)
        # after its request a caller sends nothing: its end (or anything else) stops the command
        if (readable and _stirred(conn)) or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its session: what it started too
            process.wait()
            return 124
    return exit_code(process.returncode)


def _stirred(conn: socket.socket) -> bool:
    try:
        conn.recv(1)
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def _serve_one(conn: socket.socket, slurm_bin: str, calls: threading.BoundedSemaphore) -> None:
    try:
        if _peer_uid(conn) != os.getuid():
            return
        code, said = _answer(conn, slurm_bin)
        conn.setblocking(True)
        conn.sendall(_CODE.pack(code) + said.encode())
    except Exception:  # noqa: BLE001 (a caller gone or too slow: one call's failure never stops the relay)
        pass
    finally:
        conn.close()
        calls.release()


def _answer(conn: socket.socket, slurm_bin: str) -> tuple[int, str]:
    """(exit code, what the relay says on the caller's stderr) for the call on `conn`."""
    try:
        body, fds = _receive(conn)  # OSError (a caller too slow): no answer
    except RelayError as error:
        return 2, f"AIFA Workbench's Slurm relay: {error}\n"
    try:
        request = parse_request(body)
    except RelayError as error:
        for fd in fds:
            os.close(fd)
        return 2, f"AIFA Workbench's Slurm relay: {error}\n"
    try:
        return _run(request, fds, slurm_bin, conn), ""  # _run closes the descriptors
    except RelayError as error:
        return 2, f"AIFA Workbench's Slurm relay: {error}\n"
    except OSError as error:  # the command or its working directory is missing
        return 127, f"{request.command}: {error.strerror or error}\n"
    except ValueError as error:  # a variable Popen will not pass on
        return 2, f"AIFA Workbench's Slurm relay: {request.command}: {error}\n"


def remove_ended_relays(directory: str, slurm_bin: str) -> list[str]:
    """Remove the user's relay folders beside `directory` of jobs of the same cluster that Slurm no
    longer knows (left behind when Slurm killed a batch script before it could clean up); the
    names removed. The folders are listed before Slurm is asked: a folder seen then is a job that
    had started, so Slurm lists it unless it ended. Nothing is removed when Slurm cannot say."""
    parent, own = os.path.split(os.path.abspath(directory))
    own_folder = FOLDER.match(own)
    try:
        names = os.listdir(parent)
        listed = subprocess.run(
            [os.path.join(slurm_bin, "squeue"), "-h", "-a", "-u", str(os.getuid()), "-o", "%A"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=_unnarrowed(os.environ),
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if listed.returncode != 0 or own_folder is None:
        return []
    known = set(listed.stdout.split())  # %A: each job's own id (an array's elements' too), pending or running
    removed = []
    for name in names:
        found = FOLDER.match(name)
        if not found or name == own or found.group("cluster") != own_folder.group("cluster"):
            continue
        if found.group("job") in known or not _ours_alone(os.path.join(parent, name)):
            continue
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        removed.append(name)
    return removed


def _unnarrowed(environ) -> dict[str, str]:
    """The environment without what would narrow squeue's answer (its own input variables, another
    cluster): the question is every job of the user's on this cluster."""
    return {k: v for k, v in environ.items() if not k.startswith("SQUEUE_") and k != "SLURM_CLUSTERS"}


def _log_removed(directory: str, slurm_bin: str) -> None:
    for name in remove_ended_relays(directory, slurm_bin):
        print(f"AIFA Workbench: removed {name}, the Slurm relay folder of a job that has ended", file=sys.stderr)


def _ours_alone(path: str) -> bool:
    """A real folder (not a link) of this user's."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def serve(directory: str, slurm_bin: str, inner_python: str) -> None:
    os.makedirs(os.path.join(directory, "bin"), mode=0o700, exist_ok=True)
    for command in COMMANDS:
        path = os.path.join(directory, "bin", command)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700), "w") as out:
            out.write(standin(inner_python))
    calls = threading.BoundedSemaphore(MAX_CALLS)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(os.path.join(directory, SOCKET))
        listener.listen(64)
        threading.Thread(target=_log_removed, args=(directory, slurm_bin), daemon=True).start()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # out of descriptors, say: the calls in flight free some
                time.sleep(0.1)
                continue
            if not calls.acquire(timeout=COMMAND_TIMEOUT):  # calls in flight end by then
                conn.close()
                continue
            try:
                threading.Thread(target=_serve_one, args=(conn, slurm_bin, calls), daemon=True).start()
            except RuntimeError:  # no thread to be had now (the job's or the user's process limit)
                conn.close()
                calls.release()
                time.sleep(0.1)


# --- a stand-in, inside the image -----------------------------------------------------------------


def call(argv: list[str] | None = None) -> None:
    """Run argv[0]'s command through the relay of this job, with this process's stdin, stdout
    and stderr; exit with its exit code."""
    argv = sys.argv if argv is None else argv
    command, args = os.path.basename(argv[0]), list(argv[1:])
    directory = os.path.dirname(os.path.dirname(os.path.abspath(argv[0])))
    try:
        frame = encode_request(command, args, os.getcwd(), passed_variables(os.environ))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(os.path.join(directory, SOCKET))
            here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
            sent = socket.send_fds(sock, [frame], [*(_open_or_null(fd) for fd in (0, 1, 2)), here])
            os.close(here)
            sock.sendall(frame[sent:])
            answer = b""
            while more := sock.recv(4096):  # the exit code, then what the relay says; then it closes
                answer += more
    except RelayError as error:
        sys.exit(f"{error}")
    except OSError as error:
        sys.exit(f"{command}: the job's Slurm relay is not answering ({error}).")
    if len(answer) < _CODE.size:
        sys.exit(f"{command}: the job's Slurm relay stopped before the command ended.")
    (code,) = _CODE.unpack(answer[: _CODE.size])
    sys.stderr.write(answer[_CODE.size :].decode(errors="replace"))
    sys.exit(code)


def _open_or_null(fd: int) -> int:
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_RDWR)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "serve":
        sys.exit("usage: python -m aifa_workbench.extensions.slurm_relay serve DIR SLURM_BIN INNER_PYTHON")
    serve(*sys.argv[2:])
