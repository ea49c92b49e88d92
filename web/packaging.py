"""Building a job package from a member's upload, without running it in the portal.

``marketctl submit`` runs the member's module on the member's own machine
(``contracts.package.build_package``). The portal must not run a stranger's
code in its own process, so it runs the very same ``build_package`` in a
throwaway child: its own session, CPU, memory and file-size limits, an
environment with nothing but PATH and LANG, a scratch folder as its working
directory. The child answers with JSON; nothing it returns is unpickled here.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import signal
import sys
import tempfile
from pathlib import Path

from contracts.package import BuiltPackage, PackageError

#: what building one package may use
BUILD_CPU_SECONDS = 10
BUILD_MEMORY_BYTES = 1024**3
BUILD_FILE_BYTES = 16 * 1024**2
#: seconds of wall-clock time before the child is killed
BUILD_TIMEOUT = 30.0
CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class BuildFailed(PackageError):
    """The upload is not a job the market can run (the reason is for the member)."""


def _limit_child() -> None:
    # runs in the child between fork and exec
    for which, value in ((resource.RLIMIT_CPU, BUILD_CPU_SECONDS), (resource.RLIMIT_AS, BUILD_MEMORY_BYTES),
                         (resource.RLIMIT_FSIZE, BUILD_FILE_BYTES), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


async def build_in_child(source: bytes, entry: str, args, *, filename: str = "job.py",
                         max_bytes: int) -> BuiltPackage:
    """The package ``marketctl submit`` would build for this module; BuildFailed with one line if not."""
    request = json.dumps({"source": base64.b64encode(source).decode("ascii"), "entry": entry, "args": args,
                          "filename": filename, "max_bytes": max_bytes}).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="market-build-") as scratch:
        process = await asyncio.create_subprocess_exec(
            # -I: no PYTHON* variables, no user site, no current directory on the path
            sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {_code_root()!r}); "
            "from web.packaging import _child_main; _child_main()", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=scratch, env=CHILD_ENV,
            preexec_fn=_limit_child, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(process.communicate(request), BUILD_TIMEOUT)
        except asyncio.TimeoutError as e:
            process.kill()
            await process.wait()
            raise BuildFailed(f"loading the module took more than {BUILD_TIMEOUT:g} s") from e
    try:
        answer = json.loads(out)
    except ValueError as e:
        reason = ("it used its CPU time" if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
                  else f"exit code {process.returncode}")
        raise BuildFailed(f"loading the module failed ({reason})") from e
    if not answer["ok"]:
        raise BuildFailed(answer["error"])
    return BuiltPackage(module_source=source, module_sha256=answer["module_sha256"], entry=entry,
                        kind=answer["kind"], state=base64.b64decode(answer["state"]))


def _code_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _child_main() -> None:
    """In the child: build the package from the request on stdin, answer on stdout."""
    from contracts.package import build_package

    request = json.loads(sys.stdin.buffer.read())
    path = Path(os.getcwd()) / Path(request["filename"]).name
    path.write_bytes(base64.b64decode(request["source"]))
    try:
        package = build_package(path, request["entry"], request["args"], max_bytes=request["max_bytes"])
        answer = {"ok": True, "module_sha256": package.module_sha256, "kind": package.kind,
                  "state": base64.b64encode(package.state).decode("ascii")}
    except PackageError as e:
        answer = {"ok": False, "error": str(e)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    # the module may have started threads or registered exit handlers: none of them may run
    os._exit(0)
