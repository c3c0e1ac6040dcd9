"""Dask's TLS connections empty OpenSSL's per-thread error queue before each read, write and
handshake, as OpenSSL asks of every caller (SSL_get_error(3)) and CPython's ssl module does not
(python/cpython#148594, open in 3.12 to 3.15).

Why it matters: one TLS connection that ends without a goodbye (a Dask nanny's, say) leaves
"unexpected eof while reading" in the queue of the thread that read it, and the next read of
another, healthy connection in that thread reports it as its own BrokenPipeError. A notebook's
Dask scheduler and its Client share one thread of the kernel, so under Python 3.13 (JUPITER's
Stages/2026, the simulated LUMI image) the Client lost its scheduler as soon as a worker joined:
every try, with a worker and its nanny on the same machine, and none once the queue is emptied
(tests/integration/test_tls_error_queue.py runs both in the simulated LUMI image).

Dask's TCP comms are tornado's SSLIOStream: its three methods that call OpenSSL are wrapped.
Only where the ssl module's libcrypto is a shared library of this process that can be told apart
(one path in /proc/self/maps); elsewhere nothing changes."""

from __future__ import annotations

import ctypes
import functools
import re

WRAPPED = ("read_from_fd", "write_to_fd", "_do_ssl_handshake")
_MARK = "_aifa_empties_openssl_errors"
_LIBCRYPTO = re.compile(r"\s(/\S*/libcrypto\.so[.\d]*)$")


def libcrypto_paths(maps: str) -> set[str]:
    """The libcrypto shared objects mapped into a process, from its /proc/PID/maps text (pure)."""
    return {match.group(1) for line in maps.splitlines() if (match := _LIBCRYPTO.search(line))}


@functools.cache
def _err_clear_error():
    import ssl  # noqa: F401  (loads _ssl, and with it the libcrypto it was linked with)

    try:
        with open("/proc/self/maps") as maps:
            paths = libcrypto_paths(maps.read())
    except OSError:
        return None
    if len(paths) != 1:  # none (OpenSSL linked in statically) or several: not ours to guess
        return None
    try:
        clear = ctypes.CDLL(paths.pop()).ERR_clear_error
    except (OSError, AttributeError):
        return None
    clear.restype, clear.argtypes = None, []
    return clear


def _emptying_first(method, clear):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        clear()
        return method(self, *args, **kwargs)

    return wrapper


def install() -> bool:
    """Wrap tornado's TLS stream (once per process); whether its reads now start clean."""
    from tornado.iostream import SSLIOStream

    if getattr(SSLIOStream, _MARK, False):
        return True
    clear = _err_clear_error()
    if clear is None:
        return False
    for name in WRAPPED:
        setattr(SSLIOStream, name, _emptying_first(getattr(SSLIOStream, name), clear))
    setattr(SSLIOStream, _MARK, True)
    return True
