"""Scratch directories for leases: one private base directory per sandbox,
one empty directory per running lease inside it, reused by later leases."""
from __future__ import annotations

import heapq
import os
import shutil
import stat
import tempfile

#: the folder of a lease's scratch directory (the job's cwd) that holds its input files (issue 17)
INPUTS_FOLDER = "inputs"


class ScratchDirs:
    """Scratch directories for leases, in one private directory made once (cheaper than mkdtemp per lease).

    Each lease gets an empty directory of its own. Its path is reused by a
    later lease (the lowest number free), so that the fork server, which
    sets HOME to it, sees as many distinct values as there are concurrent
    leases: glibc keeps every value setenv was ever given. The directory
    itself is kept too: it is checked empty when the next lease takes it
    (one directory read), and removed and made again only if a job left
    something in it; a mkdir and an rmdir per lease cost eight times that.
    """

    def __init__(self, owner: tuple[int, int] | None = None):
        self.base = tempfile.mkdtemp(prefix="market-sandbox-")
        # a root worker's jobs run as nobody: the base and each directory are theirs
        self._owner = owner if owner is not None and owner != (os.geteuid(), os.getegid()) else None
        self._chown(self.base)
        self._free: list[int] = []  # a heap of numbers no lease uses now
        self._count = 0
        self._numbers: dict[str, int] = {}  # path in use -> its number

    def make(self) -> str:
        """An empty directory, 0700, for one lease."""
        number = heapq.heappop(self._free) if self._free else self._next()
        path = os.path.join(self.base, f"market-job-{number}")
        if not _empty_directory(path):
            _clear(path)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                # something outlived its lease in there: leave that number, take a random name
                path = tempfile.mkdtemp(prefix="market-job-", dir=self.base)
                self._chown(path)
                return path
        os.chmod(path, 0o700)  # whatever mode the last job left it with
        self._chown(path)
        self._numbers[path] = number
        return path

    def _chown(self, path: str) -> None:
        if self._owner is not None:
            os.chown(path, *self._owner, follow_symlinks=False)

    def remove(self, path: str) -> None:
        """The lease is over: what its job left goes now, the empty directory stays for the next lease."""
        number = self._numbers.pop(path, None)
        if number is None:
            _remove_tree(path)  # a random name of make's fallback
            return
        if not _empty_directory(path):
            _clear(path)  # ``make`` makes it again
        heapq.heappush(self._free, number)

    def close(self) -> None:
        _remove_tree(self.base)

    def _next(self) -> int:
        self._count += 1
        return self._count - 1


def _clear(path: str) -> None:
    """Remove whatever is at ``path``: a tree, a file or a link (never what a link points to)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        _remove_tree(path)
        return
    try:
        os.unlink(path)
    except OSError:
        pass  # make's mkdir then fails, and it takes a random name


def _empty_directory(path: str) -> bool:
    """True if ``path`` is a directory (not a link to one) with nothing in it."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _remove_tree(path: str) -> None:
    # a job may have made files read-only or directories unreadable
    def make_writable_and_retry(function, failed_path, _exc):
        try:
            os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
            os.chmod(failed_path, stat.S_IRWXU)
            function(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def place_inputs(scratch: str, inputs, link: bool) -> None:
    """Put a lease's input files, ``(name, path)`` pairs, under ``scratch/inputs``.

    ``link``: hard links to the worker's cached copies (no copy of a large
    input per lease), for a confined job, whose child mounts the folder
    read-only (sandbox.forkchild); an unconfined job runs as the worker's
    user and could chmod a link's shared inode back to writable, so it gets
    copies. Either way the files are 0444 in a 0555 folder.
    """
    folder = os.path.join(scratch, INPUTS_FOLDER)
    os.mkdir(folder, 0o700)
    for name, path in inputs:
        target = os.path.join(folder, name)
        try:
            if not link:
                raise OSError("copy")
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)  # another file system (EXDEV), or unconfined
            os.chmod(target, 0o444)
    os.chmod(folder, 0o555)


# -- the control channel to the fork server ----------------------------------
