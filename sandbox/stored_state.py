"""States and results too large for a frame (issue 17): they cross the
sandbox's wall as files in the lease's scratch, not as frame bytes.

In: the worker's checked copy of a stored state is linked (or copied) into
the scratch as :data:`STATE_IN`; the work frame names it, and the child reads
it instead of the frame's state bytes. Out: a child whose state or result is
over the worker's inline threshold writes it to :data:`STATE_OUT` and replies
with an empty body; the worker opens that file (never following a link the
job made, only a regular file) before the scratch is removed, and streams it
to the blob store through its lease's write grant. The worker never holds a
large state in memory, and the frames stay bounded by MARKET_MAX_BLOB_BYTES.
"""
from __future__ import annotations

import os
import shutil
import stat

#: the stored state the lease resumes from, in the job's scratch (its cwd)
STATE_IN = ".market-state-in"
#: the state or result the child hands back as a file
STATE_OUT = ".market-state-out"


class StoredStateError(Exception):
    """The file the job left is not a regular file of the size its reply says."""


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


def take_state(scratch: str, size: int):
    """The file the child left as :data:`STATE_OUT`, opened for reading (a binary file
    object the caller closes); it outlives the scratch's removal. Raises StoredStateError."""
    path = os.path.join(scratch, STATE_OUT)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise StoredStateError(f"the job's stored state cannot be opened: {e.strerror or e}") from e
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        raise StoredStateError(f"the job's stored state is not a regular file of {size} bytes")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# -- the child's side (sandbox.forkchild) ---------------------------------------


def read_state_in() -> bytes:
    """The child: the stored state in its cwd, removed once read (it is the job's to keep, not the scratch's)."""
    with open(STATE_IN, "rb") as source:
        data = source.read()
    try:
        os.unlink(STATE_IN)
    except OSError:
        pass
    return data


def write_state_out(blob: bytes) -> None:
    """The child: its state or result as :data:`STATE_OUT` in its cwd, replacing whatever the job left there."""
    try:
        os.unlink(STATE_OUT)
    except FileNotFoundError:
        pass
    fd = os.open(STATE_OUT, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(blob)
