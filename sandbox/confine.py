"""Where a fork server and its jobs live: the host check, and the bubblewrap
command that starts a fork server inside its own namespaces.

One ``bwrap`` per fork server, never per lease (a bwrap start costs ~10 ms):

- identity: a user namespace in which the server and its jobs are ``nobody``
  (65534). A worker running as root first drops to the real uid 65534, so a
  job's file accesses are checked as nobody's on the host too (a user
  namespace made by root maps its uid to root's, and /etc/shadow stays
  readable). The server keeps CAP_SYS_ADMIN inside its namespace only, to
  give each child its own namespaces; the child drops every capability;
- namespaces: pid, mount, IPC, UTS, cgroup, and network (loopback only)
  unless the worker's owner allows the network; then only the children whose
  job asked for it share the host's, and every other child joins a
  loopback-only namespace the server made once;
- filesystem: an empty read-only root with /usr (and the /bin, /lib links),
  a few files of /etc, /dev/null and friends, the Python installation, and
  the market's importable packages that a job needs (``sandbox``,
  ``contracts``, ``common``), read-only; the scratch directories read-write.
  Not the repository, not ``$MARKET_HOME``, not any home directory, no /proc;
- no new privileges (bwrap sets it), a session of its own, and the server
  dies with the process that started it.

Each lease's child then unshares a mount and IPC namespace of its own, sees
its own scratch directory as ``/tmp`` (cwd and HOME) and no other
(:mod:`sandbox.forkchild`), and runs as pid 1 of a fresh pid namespace
(:class:`sandbox.kernel.PidNamespaces`).
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

#: the uid and gid a job runs as, inside its user namespace and (for a root worker) outside it
NOBODY = 65534
#: where the fork server sees the sandbox's scratch directories; a child sees its own at SCRATCH_IN_JOB
SCRATCH_MOUNT = "/run/market-scratch"
#: the files of /etc a job may read (nothing secret: no shadow, no ssh, no ssl keys)
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "hosts", "passwd", "group",
             "host.conf", "gai.conf", "mime.types")
#: and those it may read when it may use the network
ETC_NETWORK_FILES = ("resolv.conf", "ssl/certs", "ca-certificates", "ca-certificates.conf")
DEVICES = ("null", "zero", "full", "random", "urandom")
#: top-level directories that are links into /usr on a merged-/usr system
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: the packages a job's child imports (the package format and its errors), found next to this one
JOB_PACKAGES = ("sandbox", "contracts", "common")


@dataclass(frozen=True)
class Confinement:
    """How a sandbox confines its jobs: decided by the worker's owner."""

    #: False only with ``--unsafe-no-sandbox``: jobs then run as the worker's user, as they once did
    enabled: bool = True
    #: jobs that ask for it share the host's network (``--allow-network``); the others, and
    #: every job on a worker without it, have a loopback only
    allow_network: bool = False


#: the default: confined, loopback only
CONFINED = Confinement()
UNSAFE = Confinement(enabled=False)


#: kernel settings that stop user namespaces: (file, sysctl name, the blocking value, the value to set, root too)
USERNS_SETTINGS = (
    ("/proc/sys/user/max_user_namespaces", "user.max_user_namespaces", "0", "15000", True),
    ("/proc/sys/kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone", "0", "1", False),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "kernel.apparmor_restrict_unprivileged_userns",
     "1", "0", False),
)


def unavailable_reason(read=lambda path: Path(path).read_text(), root: bool | None = None) -> str | None:
    """Why this machine cannot confine jobs, in one line naming the setting to change; None if it can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    root = os.geteuid() == 0 if root is None else root
    for path, name, blocking, wanted, for_root_too in USERNS_SETTINGS:
        if root and not for_root_too:
            continue
        try:
            value = read(path).strip()
        except OSError:
            continue  # not a setting of this kernel
        if value == blocking:
            return f"user namespaces are disabled ({name} = {value}): run sysctl -w {name}={wanted} as root"
    return None


def job_identity() -> tuple[int, int]:
    """The host uid and gid the fork server starts as: nobody for a root worker, the worker's own otherwise."""
    if os.geteuid() == 0:
        return NOBODY, NOBODY
    return os.geteuid(), os.getegid()


def _python_roots() -> list[str]:
    roots = []
    for prefix in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        real = os.path.realpath(prefix)
        if not real.startswith("/usr") and real not in roots:
            roots.append(real)
    return roots


def _package_dirs() -> list[str]:
    here = Path(__file__).resolve().parent
    return [str(here.parent / name) for name in JOB_PACKAGES if (here.parent / name).is_dir()]


def _under_tmp(path: str) -> bool:
    return path == "/tmp" or path.startswith("/tmp/")


#: where a job finds its own scratch directory (its HOME, cwd and temporary directory): /tmp, unless
#: the Python or the packages a job's child needs live under /tmp (a checkout there), which a mount
#: over /tmp would hide from the job; then /scratch, and /tmp stays read-only
SCRATCH_IN_JOB = "/scratch" if any(_under_tmp(path) for path in _python_roots() + _package_dirs()) else "/tmp"


def bwrap_command(confinement: Confinement, scratch_fd: int, directory_fds: dict[str, int]) -> list[str]:
    """The ``bwrap ... --`` prefix that confines a fork server.

    ``directory_fds`` maps each read-only directory to an open descriptor of
    it, ``scratch_fd`` is the scratch base, both passed to bwrap: it binds
    what the worker opened, even where nobody could not walk the path.
    """
    command = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-add", "CAP_SYS_ADMIN",
               "--die-with-parent", "--new-session", "--hostname", "market-job"]
    if confinement.allow_network:
        # to give each child whose job did not ask for the network a loopback of its own (sandbox.kernel
        # .loopback_network): in the server's user namespace, never over the host's network
        command += ["--cap-add", "CAP_NET_ADMIN"]
    else:
        command.append("--unshare-net")
    command += ["--ro-bind", "/usr", "/usr"]
    for name in USR_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    etc = ETC_FILES + (ETC_NETWORK_FILES if confinement.allow_network else ())
    for name in etc:
        command += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in DEVICES:
        command += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for path, fd in directory_fds.items():
        command += ["--ro-bind-fd", str(fd), path]
    command += ["--bind-fd", str(scratch_fd), SCRATCH_MOUNT, "--dir", SCRATCH_IN_JOB,
                "--remount-ro", "/", "--chdir", "/", "--"]
    return command


def open_directories() -> dict[str, int]:
    """Descriptors (O_PATH) of the read-only directories a confined server needs: Python and the job packages."""
    fds = {}
    for path in _python_roots() + _package_dirs():
        if any(path == other or path.startswith(other + "/") for other in fds):
            continue
        fds[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fds
