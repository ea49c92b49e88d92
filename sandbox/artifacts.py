"""A finished job's artifacts: the files it left in ``outputs/`` of its scratch, as one bounded tar.

The job is a stranger's code and wrote that folder as it pleased, so it is
read without trusting a name in it: every entry is opened relative to its
folder's descriptor with ``O_NOFOLLOW`` (a symbolic link to the worker's
credentials is refused, not followed, whatever its place in the tree), only
regular files with a single link are taken (a hard link to a worker file is
refused), FIFOs and devices are skipped without being opened for reading,
and the walk stops at a depth, a count and a size. The tar holds names,
sizes and bytes only: mode 0644, no owner, time 0.
"""
from __future__ import annotations

import io
import os
import stat
import tarfile

#: the folder of the scratch directory whose files come back
OUTPUTS = "outputs"
#: deepest folder nesting taken, and most entries (files and folders) looked at
MAX_DEPTH = 8
MAX_ENTRIES = 1000
#: what the tar format adds per member (header, padding): counted against the limit
TAR_OVERHEAD = 1024


class TooLarge(Exception):
    pass


def collect(scratch: str, limit: int) -> tuple[bytes | None, str | None]:
    """(the tar of ``scratch/outputs``, or None; a note for the lease's output, or None).

    None and no note: the job wrote no ``outputs/`` (or an empty one)."""
    buffer = io.BytesIO()
    written, note = collect_into(scratch, limit, buffer)
    return (buffer.getvalue() if written else None), note


def collect_into(scratch: str, limit: int, target) -> tuple[bool, str | None]:
    """Write the tar of ``scratch/outputs`` to ``target`` (a binary file), each file streamed
    (issue 17: artifacts up to 1 GiB go to the blob store, never whole in memory).

    (whether a tar with files was written; a note for the lease's output, or None)."""
    try:
        top = os.open(os.path.join(scratch, OUTPUTS), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False, None
    except OSError:
        return False, f"[artifacts: {OUTPUTS}/ is not a folder (a link?): nothing sent]"
    skipped = []
    try:
        with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as tar:
            count = _add_folder(tar, top, "", 0, limit, skipped, [0])
    except TooLarge:
        return False, f"[artifacts: {OUTPUTS}/ holds more than {limit} bytes (the limit): nothing sent]"
    except OSError as e:
        return False, f"[artifacts: {OUTPUTS}/ could not be read ({e.strerror or e}): nothing sent]"
    finally:
        os.close(top)
    note = f"[artifacts: skipped {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}]" if skipped else None
    return bool(count), note


def _add_folder(tar, folder_fd: int, prefix: str, depth: int, limit: int, skipped: list, seen: list) -> int:
    added = 0
    for name in sorted(os.listdir(folder_fd)):
        seen[0] += 1
        if seen[0] > MAX_ENTRIES:
            skipped.append(f"entries past {MAX_ENTRIES}")
            return added
        path = f"{prefix}{name}"
        mode = os.lstat(name, dir_fd=folder_fd).st_mode
        if stat.S_ISDIR(mode) and depth < MAX_DEPTH:
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder_fd)
            except OSError:
                skipped.append(f"{path}/ (unreadable)")
                continue
            try:
                added += _add_folder(tar, inner, f"{path}/", depth + 1, limit, skipped, seen)
            finally:
                os.close(inner)
        elif stat.S_ISREG(mode):
            added += _add_file(tar, folder_fd, name, path, limit, skipped)
        else:
            skipped.append(f"{path} (not a regular file)")
    return added


def _add_file(tar, folder_fd: int, name: str, path: str, limit: int, skipped: list) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        skipped.append(f"{path} (unreadable or a link)")
        return 0
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        # checked on the open file: it may have been swapped since lstat
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            skipped.append(f"{path} (a hard link or not a regular file)")
            return 0
        if tar.fileobj.tell() + info.st_size + TAR_OVERHEAD > limit:
            raise TooLarge
        member = tarfile.TarInfo(path)
        member.size, member.mode, member.mtime = info.st_size, 0o644, 0
        # streamed: a file still growing is cut at its size; one that shrank fails the tar (OSError)
        tar.addfile(member, file)
    return 1


def members(tar_bytes: bytes) -> list[tuple[str, int]]:
    """(name, size) of each file in an artifacts tar, for listing it."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
        return [(m.name, m.size) for m in tar.getmembers() if m.isfile()]
