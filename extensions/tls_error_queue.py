"""Dask's TLS connections empty OpenSSL's per-thread error queue before each read, write and
handshake, as OpenSSL asks of every caller (SSL_get_error(3)) and CPython's ssl module does not
(python/cpython#148594, open as this is written; 3.12 to 3.15 have it).

Why it matters: one TLS connection that ends without a goodbye (a Dask nanny's, say) leaves
"unexpected eof while reading" in the queue of the thread that read it, and the next read of
another, healthy connection in that thread reports it as its own BrokenPipeError. A notebook's
Dask scheduler and its Client share one thread of the kernel, so under Python 3.13 (JUPITER's
Stages/2026, the simulated LUMI image) the Client lost its scheduler as soon as a worker joined:
every try, with a worker and its nanny on the same machine, and none once the queue is emptied
(tests/integration/test_tls_error_queue.py runs both in the simulated LUMI image).

Dask's TCP comms are tornado's SSLIOStream: its three methods that call OpenSSL are wrapped.
ERR_clear_error is looked up from the ssl module's own extension (its OpenSSL, whichever that is:
the system's, or one linked into it); where it cannot be found, nothing changes and install()
says so."""

from __future__ import annotations

import ctypes
import functools
import logging

WRAPPED = ("read_from_fd", "write_to_fd", "_do_ssl_handshake")
_MARK = "_aifa_empties_openssl_errors"
log = logging.getLogger(__name__)


@functools.cache
def err_clear_error():
    """OpenSSL's ERR_clear_error as the ssl module links it, or None."""
    import _ssl

    where = getattr(_ssl, "__file__", None)  # None: built into the interpreter
    try:
        clear = (ctypes.CDLL(where) if where else ctypes.pythonapi).ERR_clear_error
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
    clear = err_clear_error()
    if clear is None:
        log.warning("OpenSSL's ERR_clear_error was not found: Dask's TLS comms may be lost to python/cpython#148594")
        return False
    for name in WRAPPED:
        setattr(SSLIOStream, name, _emptying_first(getattr(SSLIOStream, name), clear))
    setattr(SSLIOStream, _MARK, True)
    return True
