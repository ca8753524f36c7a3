"""The test sandbox's forkserver: importing this module (its preload, sandbox.PRELOAD) ties it to the server.

multiprocessing's forkserver outlives the process that started it for as long as one of its children holds the pipe
that keeps it alive, and each child of the sandbox dies with the forkserver (PR_SET_PDEATHSIG): a test stuck in C code
would keep both alive after the server died. So the forkserver itself receives SIGKILL when the server dies, and
every child with it. Only the forkserver imports this module (the side effect is its purpose); nothing else in the
package imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux's PR_SET_PDEATHSIG); at once if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGKILL)


die_with_parent()
