"""The few Linux calls the confined fork server and its children make, through ctypes.

Python has no ``unshare``, ``setns``, ``mount`` or ``capset``. The function
objects are built once, when the fork server imports this module, so a child
calls what is already in memory (each page a child touches is a copy).
"""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
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
