"""Building a job package from a member's upload, without running it in the portal.

``marketctl submit`` checks the member's module the same way: the module's
top-level code and ``initial_state`` run in a child of a confined fork
server (:mod:`sandbox.build`), as a worker runs a job: as nobody, with no
network, no view of the portal's files (``$MARKET_HOME``, its web secret,
the ledger) and the build's limits. The child answers with a JSON header
and the state's bytes; nothing it returns is unpickled here.
"""
from __future__ import annotations

from contracts.package import BuiltPackage
from sandbox.build import BuildFailed, build_confined

__all__ = ["BuildFailed", "build_in_child"]


async def build_in_child(source: bytes, entry: str, args, *, filename: str = "job.py",
                         max_bytes: int) -> BuiltPackage:
    """The package ``marketctl submit`` would build for this module; BuildFailed with one line if not."""
    return await build_confined(source, entry, args, filename=filename, max_bytes=max_bytes)
