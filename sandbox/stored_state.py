"""States and results too large for a frame (issue 17): they cross the
sandbox's wall without being held whole by the worker.

In: the worker's checked copy of a stored state is linked (or copied) into
the lease's scratch as :data:`STATE_IN`; the work frame names it, and the
child reads it instead of the frame's state bytes. Out: the child sends its
state or result on the job socket as usual, and the worker spools a reply
body over its inline threshold to a temporary file as it comes
(sandbox.childlease.ChildLease), which it streams to the blob store through
its lease's write grant. A socket, not a file in the scratch: the job's own
file size limit (RLIMIT_FSIZE) stays what it was, and there is no file the
job could swap for a link. Frames of the frame bound's size are still the
only thing a worker holds in memory.
"""
from __future__ import annotations

import os
import shutil

#: the stored state the lease resumes from, in the job's scratch (its cwd)
STATE_IN = ".market-state-in"


def place_state(scratch: str, path: str, link: bool) -> None:
    """Put the stored state at ``path`` in ``scratch`` as :data:`STATE_IN`, readable by the job."""
    target = os.path.join(scratch, STATE_IN)
    try:
        if not link:
            raise OSError("copy")
        os.link(path, target)  # the worker's checked copy is read-only (0444): the job cannot change it
    except OSError:
        shutil.copyfile(path, target)  # another file system, or an unconfined job (it runs as the worker)
        os.chmod(target, 0o444)


def read_state_in() -> bytes:
    """The child: the stored state in its cwd, removed once read (it is the job's to keep, not the scratch's)."""
    with open(STATE_IN, "rb") as source:
        data = source.read()
    try:
        os.unlink(STATE_IN)
    except OSError:
        pass
    return data
