"""Loading a stranger's module to build its package, in the sandbox.

The portal builds the package of an uploaded module, and ``marketctl
submit`` checks a module before it publishes it: both run the module's
top-level code and its ``initial_state``. Both do it here, in a child of a
confined fork server, exactly as a worker runs a job. The answer is a JSON
header and the state's bytes; nothing the module produced is unpickled.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from contracts.package import BuiltPackage, PackageError, read_source
from sandbox.confine import CONFINED, Confinement
from sandbox.childlease import build_frame
from sandbox.forkclient import SandboxError
from sandbox.runner import Limits, Sandbox, death_reason

#: what loading one module may use
BUILD_CPU_SECONDS = 10
BUILD_MEMORY_BYTES = 1024**3
BUILD_FILE_BYTES = 16 * 1024**2
#: seconds of wall-clock time before the child is killed
BUILD_TIMEOUT = 30.0


class BuildFailed(PackageError):
    """The module is not a job the market can run (the reason is for its author)."""


def build_limits(max_bytes: int) -> Limits:
    return Limits(cpu_seconds=BUILD_CPU_SECONDS, memory_bytes=BUILD_MEMORY_BYTES, file_bytes=BUILD_FILE_BYTES,
                  output_bytes=4096, blob_bytes=max_bytes)


async def build_in(sandbox: Sandbox, source: bytes, entry: str, args, *, filename: str = "job.py",
                   max_bytes: int, timeout: float = BUILD_TIMEOUT, initial_state: bool = True) -> BuiltPackage:
    """The package of ``source`` built by a child of ``sandbox``; :class:`BuildFailed` with one line if not.
    ``initial_state``: call the module's ``initial_state(args)`` (False: the state is ``args``)."""
    try:
        lease = await sandbox.run_frame(build_frame(source, entry, args, filename, max_bytes, initial_state),
                                        time.monotonic() + timeout)
    except SandboxError as e:
        raise BuildFailed(f"the sandbox failed: {e}") from e
    reply = lease.reply()
    if not isinstance(reply, tuple):
        reason = reply or death_reason(lease.exit_code, lease.killed)
        if lease.killed:
            reason = f"loading the module took more than {timeout:g} s"
        raise BuildFailed(f"loading the module failed: {reason}")
    header, state = reply
    if header.get("status") != "built":
        raise BuildFailed(str(header.get("error") or "loading the module failed"))
    if header.get("kind") not in ("generator", "function") or not isinstance(header.get("module_sha256"), str):
        raise BuildFailed("loading the module failed: a malformed answer")
    return BuiltPackage(module_source=source, module_sha256=header["module_sha256"], entry=entry,
                        kind=header["kind"], state=state)


def started_build_sandbox(max_bytes: int, confinement: Confinement = CONFINED) -> Sandbox:
    """A sandbox with the build's limits, started; :class:`BuildFailed` if this machine cannot confine."""
    sandbox = Sandbox(build_limits(max_bytes), confinement=confinement)
    try:
        sandbox.start()
    except SandboxError as e:
        raise BuildFailed(f"cannot load the module safely here: {e}") from e
    return sandbox


async def build_confined(source: bytes, entry: str, args, *, filename: str = "job.py", max_bytes: int,
                         confinement: Confinement = CONFINED) -> BuiltPackage:
    """Build in a sandbox of its own, started for this module and stopped after (~0.1 s)."""
    sandbox = started_build_sandbox(max_bytes, confinement)
    try:
        return await build_in(sandbox, source, entry, args, filename=filename, max_bytes=max_bytes)
    finally:
        sandbox.close()


def build_file_confined(path, entry: str, args, *, max_bytes: int,
                        confinement: Confinement = CONFINED) -> BuiltPackage:
    """:func:`contracts.package.build_package` of a file, but with the module run in the sandbox."""
    path = Path(path)
    source = read_source(path)
    return asyncio.run(build_confined(source, entry, args, filename=path.name, max_bytes=max_bytes,
                                      confinement=confinement))
