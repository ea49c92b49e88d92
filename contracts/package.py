"""The job package: module source + entry name + serialized state.

A job is a function ``entry(state)`` in a Python module: a generator that
yields its state at safe points and returns its result, or a plain function
that returns its result. The submitter builds a :class:`BuiltPackage`
(:func:`build_package`); a worker executes the module under the same stable
name (:func:`load_module`), loads the state and calls the entry.

Blobs carry a one-byte format tag so the reader knows how to decode them:

- ``P`` plain :mod:`pickle` (protocol 5), the default: it is fast;
- ``D`` :mod:`dill`, only when pickle cannot (lambdas, closures, ...);
- ``J`` JSON, for results that are plain JSON data.

Unpickling runs code, so **only a sandboxed worker may call**
:func:`loads_state`; everything else (ledger, scheduler, portal, marketctl)
reads results with :func:`result_as_json`, which never unpickles.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import linecache
import math
import pickle
import re
import sys
import traceback
import types
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from common.errors import MarketError

PICKLE_TAG = b"P"
DILL_TAG = b"D"
JSON_TAG = b"J"
PICKLE_PROTOCOL = 5
#: the package size a submitter may send (module source + initial state);
#: the ledger's MARKET_MAX_BLOB_BYTES default is the same
MAX_PACKAGE_BYTES = 4 * 1024 * 1024
#: deepest nesting written as JSON; deeper values are pickled (orjson stops at 255)
MAX_JSON_DEPTH = 200
MODULE_PREFIX = "market_job_"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JSON_SCALARS = (str, int, bool, type(None))


class PackageError(MarketError):
    """A job package that cannot be built, loaded or decoded; one line for the user."""

    exit_code = 2

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidTarget(PackageError):
    """``marketctl submit`` was given something other than ``path.py:function``."""


class SourceNotFound(PackageError):
    """The module file cannot be read."""


class InvalidSource(PackageError):
    """The module does not compile, or fails while it is executed."""


class EntryNotFound(PackageError):
    """The module has no attribute of the entry's name."""


class EntryNotCallable(PackageError):
    """The entry exists but is not a plain or generator function."""


class StateNotSerializable(PackageError):
    """Neither pickle nor dill can serialize the value."""


class PackageTooLarge(PackageError):
    """Module source + state exceed the size limit."""


class InvalidBlob(PackageError):
    """A state or result blob with an unknown tag or a corrupt body."""


class ResultNotJSON(PackageError):
    """The result is pickled; only a sandbox may read it."""


@dataclass(frozen=True)
class BuiltPackage:
    """What ``job.submitted`` carries: the module, the entry, the initial state."""

    module_source: bytes
    module_sha256: str
    entry: str
    kind: str  # "generator" or "function"
    state: bytes


# -- serialization -----------------------------------------------------------


def dumps_state(obj, what: str = "the state") -> bytes:
    """Serialize a job state: pickle when it can, dill when pickle cannot.

    Raises :class:`StateNotSerializable` ("<what> cannot be serialized: ...")
    when neither can.
    """
    try:
        return PICKLE_TAG + pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception:  # noqa: BLE001 - any failure (PicklingError, TypeError, AttributeError, ...) means "try dill"
        pass
    try:
        # dill's pickler is written in Python and ~13x slower: the fallback only
        import dill  # imported only when needed: it makes every forked sandbox child bigger

        return DILL_TAG + dill.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - user objects may raise anything from __reduce__
        raise StateNotSerializable(f"{what} cannot be serialized: {_one_line(e, with_type=False)}") from e


def loads_state(data: bytes):
    """Decode a tagged state or result blob. Unpickles: call it only inside a sandbox."""
    tag, body = _split(data)
    try:
        if tag == PICKLE_TAG:
            return pickle.loads(body)
        if tag == DILL_TAG:
            import dill

            return dill.loads(body)
        return _json_loads(body)
    except PackageError:
        raise
    except Exception as e:
        raise InvalidBlob(f"the state cannot be loaded: {_one_line(e)}") from e


def dumps_result(obj) -> bytes:
    """Serialize a job's result: JSON when it is plain JSON data, else like a state.

    Plain JSON data means exactly dict (with str keys), list, str, int, finite
    float, bool and None, nested; a tuple or a subclass is pickled instead, so
    a reader never gets back a different type than the job returned.
    """
    if is_plain_json(obj):
        try:
            return JSON_TAG + orjson.dumps(obj)
        except orjson.JSONEncodeError:
            pass  # integers beyond 64 bits, lone surrogates: the stdlib writes both exactly
        try:
            return JSON_TAG + json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("ascii")
        except (ValueError, RecursionError):
            pass
    return dumps_state(obj)


def result_as_json(data: bytes):
    """The value of a JSON result blob; the only reader safe outside a sandbox.

    Raises :class:`ResultNotJSON` for a pickled result.
    """
    tag, body = _split(data)
    if tag != JSON_TAG:
        raise ResultNotJSON("the result is a pickled Python object; download it with --raw")
    return _json_loads(body)


def is_plain_json(value, depth: int = 0) -> bool:
    """True when ``value`` is made only of exact JSON types (see :func:`dumps_result`)."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)  # NaN and infinities are not JSON
    if depth >= MAX_JSON_DEPTH:
        return False  # also ends a self-containing list or dict
    if kind is list:
        return all(type(item) in _JSON_SCALARS or is_plain_json(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(key) is str and is_plain_json(item, depth + 1) for key, item in value.items())
    return False


def _json_loads(body: bytes):
    # the stdlib reader, because orjson reads integers beyond 64 bits as floats
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise InvalidBlob(f"the JSON blob is corrupt: {_one_line(e)}") from e


def _split(data: bytes) -> tuple[bytes, bytes]:
    if not data:
        raise InvalidBlob("the blob is empty")
    tag = bytes(data[:1])
    if tag not in (PICKLE_TAG, DILL_TAG, JSON_TAG):
        raise InvalidBlob(f"unknown blob format {tag!r}")
    return tag, bytes(data[1:])


# -- modules -----------------------------------------------------------------


def module_name(module_sha256: str) -> str:
    """The name a job's module is executed under, on every machine.

    Classes defined in the module pickle as ``market_job_<sha>.ClassName`` on
    the submitter's machine and unpickle on any worker that loaded the module.
    """
    if not _SHA256.match(module_sha256):
        raise InvalidBlob(f"{module_sha256!r} is not a sha256 (64 lowercase hex digits)")
    return MODULE_PREFIX + module_sha256[:16]


def load_module(source: bytes, sha256: str, filename: str | None = None) -> types.ModuleType:
    """Execute ``source`` as a fresh module named :func:`module_name` and register it.

    The module is in ``sys.modules`` while it executes (dataclasses and
    pickle look it up there). Raises :class:`InvalidBlob` when the source does
    not hash to ``sha256``, :class:`InvalidSource` on a syntax error; an
    exception raised by the module's own code propagates unchanged, so a
    sandbox can report its traceback.
    """
    if hashlib.sha256(source).hexdigest() != sha256:
        raise InvalidBlob(f"the module source does not hash to {sha256[:12]}...")
    name = module_name(sha256)
    display = Path(filename).name if filename else f"{name}.py"
    return exec_module(source, name, filename or display, display)


def exec_module(source: bytes, name: str, filename: str, display: str | None = None) -> types.ModuleType:
    """:func:`load_module` for a source whose sha256 the caller has already
    checked, under ``name`` (its :func:`module_name`).

    A sandbox child runs this on every lease: the worker verified the bytes
    when it decoded the lease, and every check or helper the child runs
    again costs it page faults on memory shared with its fork server.
    """
    code = _compile(source, filename, display or filename)
    # tracebacks of a module that exists only in memory still show its lines
    # (an entry with mtime None is never evicted by linecache.checkcache)
    lines = source.decode("utf-8", "replace").splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _compile(source: bytes, filename: str, display: str) -> types.CodeType:
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f"line {e.lineno}" if e.lineno else "syntax"
        raise InvalidSource(f"{display} {where}: {e.msg}") from e
    except ValueError as e:  # null bytes in the source
        raise InvalidSource(f"{display}: {_one_line(e)}") from e


# -- building a package ------------------------------------------------------


def parse_target(target: str) -> tuple[Path, str]:
    """Split ``"path.py:entry"`` into the path and the entry's name."""
    path, sep, entry = target.rpartition(":")
    if not sep or not path or not entry:
        raise InvalidTarget(
            f"{target!r} is not a job target; write path.py:function, e.g. examples/jobs/bubble_sort.py:sort"
        )
    if not entry.isidentifier():
        raise InvalidTarget(f"{entry!r} in {target!r} is not a function name")
    return Path(path), entry


def build_package(path, entry: str, args=None, max_bytes: int = MAX_PACKAGE_BYTES,
                  initial_state: bool = True) -> BuiltPackage:
    """Read, load and check a job module; serialize its initial state.

    The module runs here, under its stable name, so that classes it defines
    pickle the way a worker will unpickle them. The initial state is
    ``module.initial_state(args)`` when the module defines ``initial_state``
    (and ``initial_state`` is true: a map's chunks never call it), else
    ``args``. Every failure is a :class:`PackageError` with one line.
    """
    path = Path(path)
    display = path.name
    source = read_source(path)
    sha256 = hashlib.sha256(source).hexdigest()
    module = _execute(source, sha256, path)
    function = _find_entry(module, entry, display)
    state = dumps_state(_initial_state(module, args, display) if initial_state else args, what="the initial state")
    size = len(source) + len(state)
    if size > max_bytes:
        raise PackageTooLarge(f"package is {_size(size, max_bytes)}; the limit is {_size(max_bytes, size)} "
                              "(its module and initial state: give large data as --input files)")
    kind = "generator" if inspect.isgeneratorfunction(function) else "function"
    return BuiltPackage(module_source=source, module_sha256=sha256, entry=entry, kind=kind, state=state)


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def submission_payload(package: BuiltPackage, *, job_id: str, name: str, price: int, max_attempts: int,
                       network: bool = False, replicas: int = 1) -> dict:
    """The ``job.submitted`` payload for a built package (the same from marketctl and the portal).

    ``network``: the owner asks for the host's network; only workers whose owners allow it run the job."""
    from contracts.blobs import Blob

    return {"job_id": job_id, "name": name, "price": price, "entry": package.entry, "kind": package.kind,
            "module": Blob(package.module_sha256, package.module_source), "state": Blob.of(package.state),
            "max_attempts": max_attempts, "network": network, "replicas": replicas}


def read_source(path: Path) -> bytes:
    """The bytes of a module file; SourceNotFound with one clear line otherwise."""
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise SourceNotFound(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise SourceNotFound(f"{path}: is a directory, not a Python file") from e
    except OSError as e:
        raise SourceNotFound(f"{path}: {e.strerror or e}") from e


def _execute(source: bytes, sha256: str, path: Path) -> types.ModuleType:
    try:
        return load_module(source, sha256, filename=str(path))
    except PackageError:
        raise
    except (Exception, SystemExit) as e:  # not KeyboardInterrupt: that stays an interrupt
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise InvalidSource(f"{path.name} failed to load{where}: {_one_line(e)}") from e


def _find_entry(module: types.ModuleType, entry: str, display: str):
    if not hasattr(module, entry):
        functions = sorted(
            name for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__
            and not name.startswith("_") and name != "initial_state"
        )
        listed = f"functions: {', '.join(functions)}" if functions else "it defines no functions"
        raise EntryNotFound(f"{display} has no function {entry!r} ({listed})")
    function = getattr(module, entry)
    if not callable(function):
        raise EntryNotCallable(f"{entry!r} in {display} is not callable")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise EntryNotCallable(f"{entry!r} in {display} is async; a job is a plain or a generator function")
    return function


def _initial_state(module: types.ModuleType, args, display: str):
    make = getattr(module, "initial_state", None)
    if make is None:
        return args
    if not callable(make):
        raise EntryNotCallable(f"'initial_state' in {display} is not callable")
    try:
        return make(args)
    except Exception as e:
        raise InvalidSource(f"initial_state(args) in {display} failed: {_one_line(e)}") from e


def _one_line(error: BaseException, with_type: bool = True) -> str:
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text}" if with_type else text


def _size(size: int, other: int) -> str:
    # 1 decimal is enough unless it would print two different sizes the same
    if f"{size / 2**20:.1f}" == f"{other / 2**20:.1f}":
        return f"{size} bytes"
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"
