"""The guard against CPython's stale OpenSSL error queue (python/cpython#148594): a real Dask
scheduler and a TLS comm to it in one thread, with an error left in that thread's queue as a
connection that ended abruptly leaves it; each case in a process of its own (the guard is
process-wide)."""

import subprocess
import sys
import textwrap

import pytest

from aifa_workbench.extensions.tls_error_queue import libcrypto_paths

pytestmark = pytest.mark.unit

STALE_ERROR_CASE = textwrap.dedent(
    """
    import asyncio, ctypes, sys
    from distributed import Scheduler
    from distributed.comm import connect
    from distributed.security import Security

    if sys.argv[1] == "guarded":
        from aifa_workbench.extensions import tls_error_queue
        assert tls_error_queue.install() and tls_error_queue.install()  # once is enough; twice is harmless

    def leave_a_stale_error():  # "unexpected eof while reading", as a nanny's ended connection does
        libcrypto = ctypes.CDLL(next(iter(tls_error_queue_paths())))
        libcrypto.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        libcrypto.ERR_new()
        libcrypto.ERR_set_error(20, 294, None)

    def tls_error_queue_paths():
        from aifa_workbench.extensions.tls_error_queue import libcrypto_paths
        return libcrypto_paths(open("/proc/self/maps").read())

    async def main():
        security = Security.temporary()
        async with Scheduler(protocol="tls://", host="127.0.0.1", dashboard_address=":0", security=security) as s:
            comm = await connect(s.address, **security.get_connection_args("client"))
            await comm.write({"op": "identity"})
            await comm.read()
            leave_a_stale_error()
            try:
                await comm.write({"op": "identity"})
                print("answered:", (await comm.read())["type"])
            except Exception as error:
                print("lost:", type(error).__name__)

    asyncio.run(main())
    """
)


def run_case(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", STALE_ERROR_CASE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_stale_openssl_error_breaks_a_healthy_dask_comm_unless_the_queue_is_emptied_first():
    assert run_case("plain") == "lost: CommClosedError"  # what Dask does in this thread without the guard
    assert run_case("guarded") == "answered: Scheduler"


def test_the_libcrypto_of_the_process_is_found_in_its_memory_map():
    maps = (
        "7f00-7f01 r--p 00000000 fe:01 12 /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n"
        "7f01-7f02 r-xp 00001000 fe:01 12 /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n"
        "7f02-7f03 r--p 00000000 fe:01 13 /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
        "7f03-7f04 r--p 00000000 fe:01 14 /opt/x/lib/libcrypto-hidden.so (deleted)\n"
        "7f04-7f05 rw-p 00000000 00:00 0 [heap]\n"
    )
    assert libcrypto_paths(maps) == {"/usr/lib/x86_64-linux-gnu/libcrypto.so.3"}
    assert libcrypto_paths(maps + "7f05-7f06 r--p 0 fe:01 15 /opt/conda/lib/libcrypto.so.3\n") == {
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/opt/conda/lib/libcrypto.so.3",
    }
