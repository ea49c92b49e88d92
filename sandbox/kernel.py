"""The few Linux calls the confined fork server and its children make, through ctypes.

Python has no ``unshare``, ``setns``, ``mount`` or ``capset``. The function
objects are built once, when the fork server imports this module, so a child
calls what is already in memory (each page a child touches is a copy).
"""
from __future__ import annotations

import _thread
import ctypes
import errno
import fcntl
import os
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: ioctls: a socket's network namespace as a descriptor (linux/sockios.h), an interface's flags
SIOCGSKNS = 0x894C
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH14x")
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RDONLY = 1
MS_REMOUNT = 32
#: statvfs's f_flag bits that are the same as the mount flags (nosuid, nodev, noexec,
#: noatime, nodiratime, relatime), which a remount in a user namespace must keep
_LOCKED_FLAGS = 2 | 4 | 8 | 1024 | 2048 | (1 << 21)
MNT_DETACH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_capset = _libc.capset
_capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
# capset's header and an all-zero data pair: made once, shared by every child
_CAP_HEADER = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
_CAP_NONE = (ctypes.c_uint32 * 6)()


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, flags: int) -> None:
    _check(_setns(fd, flags), "setns")


def bind(source: bytes, target: bytes) -> None:
    _check(_mount(source, target, None, MS_BIND, None), "bind mount")


def bind_read_only_if_there(path: bytes) -> None:
    """Make ``path``, if it exists, a read-only view of itself (a job's inputs: issue 17).

    The bind is the existence test (no stat first: a child touches as few
    pages as it can). The remount keeps the flags the mount already has
    (nosuid, nodev, ...): in a user namespace the ones its creator set are
    locked, and dropping one makes the remount fail."""
    if _mount(path, path, None, MS_BIND, None) != 0:
        if ctypes.get_errno() == errno.ENOENT:
            return  # a job without inputs
        _check(-1, "bind mount")
    flags = os.statvfs(path).f_flag & _LOCKED_FLAGS
    _check(_mount(b"none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, None), "read-only remount")


def make_mounts_private() -> None:
    """No mount made here (or in a child's copy) propagates anywhere else."""
    _check(_mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def detach(target: bytes) -> None:
    _check(_umount2(target, MNT_DETACH), "umount")


def drop_capabilities() -> None:
    """Clear the effective, permitted and inheritable sets (the ambient set follows)."""
    _check(_capset(ctypes.addressof(_CAP_HEADER), ctypes.addressof(_CAP_NONE)), "capset")


class PidNamespaces:
    """Gives each child the fork server forks next a pid namespace of its own.

    ``unshare(CLONE_NEWPID)`` moves only the children forked afterwards, and
    only once: the server first goes back to its own namespace for children
    (``setns`` on a pidfd of itself), then unshares a fresh one. The child is
    pid 1 there, so everything it spawns dies with it, however detached.
    """

    def __init__(self):
        self._self = os.pidfd_open(os.getpid())

    def next_child(self) -> None:
        setns(self._self, CLONE_NEWPID)
        unshare(CLONE_NEWPID)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        _, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(probe.fileno(), SIOCGIFFLAGS, _IFREQ_FLAGS.pack(b"lo", 0)))
        fcntl.ioctl(probe.fileno(), SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | IFF_UP))


def loopback_network() -> int:
    """A new network namespace with only its loopback, up; returns a descriptor of it.

    For a fork server that shares the host's network (the worker's owner
    allows it): a child whose job did not ask for the network joins this one
    (:func:`join_network`), as a server without network has for all its
    children. Made once, in a thread of its own, because a network namespace
    is per thread: the server itself stays on the host's network, and
    ``SIOCGSKNS`` names the new one without /proc. Needs CAP_SYS_ADMIN and
    CAP_NET_ADMIN in the server's user namespace (bwrap gives them; they
    reach nothing of the host's network, which belongs to the host's).
    """
    done, found = _thread.allocate_lock(), []
    done.acquire()

    def make() -> None:
        try:
            unshare(CLONE_NEWNET)
            _loopback_up()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inside:
                found.append(fcntl.ioctl(inside.fileno(), SIOCGSKNS))
        except OSError as e:
            found.append(e)
        finally:
            done.release()

    _thread.start_new_thread(make, ())
    done.acquire()
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def join_network(namespace_fd: int) -> None:
    """Move this process into the network namespace ``namespace_fd`` (one setns: ~0.1 ms per fork, measured)."""
    setns(namespace_fd, CLONE_NEWNET)
