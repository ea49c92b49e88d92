"""A job that reads its input files (issue 17) and tries to change them."""
import errno
import hashlib
import os


def _refused(action) -> str:
    try:
        action()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "allowed"


def _append(path):
    with open(path, "ab") as f:
        f.write(b"tampered")


def _create(path):
    with open(path, "wb") as f:
        f.write(b"new")


def read_inputs(state):
    names = sorted(os.listdir("inputs"))
    seen = {}
    for name in names:
        with open(os.path.join("inputs", name), "rb") as f:
            data = f.read()
        seen[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    first = os.path.join("inputs", names[0])
    return {
        "inputs": seen,
        # the folder is a read-only mount: refused whoever owns the files, whatever their modes
        "read_only_mount": bool(os.statvfs("inputs").f_flag & os.ST_RDONLY),
        "scratch_writable": not (os.statvfs(".").f_flag & os.ST_RDONLY),
        "lines": open(os.path.join("inputs", "data.csv")).read().splitlines()[:2],
        # every way of changing an input is refused: a read-only mount
        "append": _refused(lambda: _append(first)),
        "chmod": _refused(lambda: os.chmod(first, 0o666)),
        "unlink": _refused(lambda: os.unlink(first)),
        "create": _refused(lambda: _create(os.path.join("inputs", "new.bin"))),
        "rename": _refused(lambda: os.rename(first, os.path.join("inputs", "moved"))),
    }


def digest_inputs(state):
    """Each input's size and sha256, read in chunks (a 1 GiB input never sits in memory)."""
    out = {}
    for name in sorted(os.listdir("inputs")):
        digest, size = hashlib.sha256(), 0
        with open(os.path.join("inputs", name), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        out[name] = {"size": size, "sha256": digest.hexdigest()}
    return out
