"""`python -m aifa_workbench.hub_config.tied PARENT_PID -- COMMAND...`: run COMMAND so that it ends
when the process PARENT_PID ends, however that ends (kill -9 included).

The hub starts its services (the idle culler) as its own children; a hub killed outright would
leave them running, polling with a dead token and holding the log writer's pipe open, and the
next start would add more. The kernel's parent-death signal (prctl PR_SET_PDEATHSIG, kept across
exec) ends them with their parent; a parent that is already gone when this starts is noticed too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def tie_to(parent_pid: int) -> bool:
    """Ask for SIGTERM when the parent dies; False if the parent is not (or no longer) parent_pid."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent_pid


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        print("usage: python -m aifa_workbench.hub_config.tied PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    if not tie_to(int(argv[1])):
        return 0  # the hub is gone already: nothing to serve
    os.execvp(argv[3], argv[3:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
