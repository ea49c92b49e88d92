"""The sandbox: runs a stranger's code (a job's lease, or the loading of an
uploaded module) confined, for the worker, the portal and ``marketctl submit``.

A :class:`Sandbox` starts one fork server inside bubblewrap
(:mod:`sandbox.confine`); the server forks a child per lease, each in
namespaces of its own (:mod:`sandbox.forkserver`, :mod:`sandbox.forkchild`);
the caller's side is :mod:`sandbox.forkclient` and :mod:`sandbox.runner`.
This package imports neither ``agents`` nor ``web``: they import it.

The names below are loaded on first use, so that the fork server, which
imports :mod:`sandbox.forkchild`, does not load asyncio and the logging.
"""
from __future__ import annotations

_EXPORTS = {
    "Sandbox": "sandbox.runner", "Limits": "sandbox.runner", "Work": "sandbox.runner",
    "Outcome": "sandbox.runner", "SandboxError": "sandbox.forkclient", "SandboxUnavailable": "sandbox.runner",
    "Confinement": "sandbox.confine", "CONFINED": "sandbox.confine", "UNSAFE": "sandbox.confine",
    "unavailable_reason": "sandbox.confine",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
