"""Map jobs: one function over many items, split into chunks that run as jobs.

A map's every chunk is an ordinary job package, so workers and the sandbox
learn nothing new: the module is the owner's source with a small generic
chunk runner appended (:data:`CHUNK_RUNNER_SOURCE`), the entry is that
runner, and the state is ``{"entry": ENTRY, "items": [...], ...}``. The
runner calls ``ENTRY(item)`` for each item in turn under the job contract
(a plain function, or a generator that yields its state at safe points),
with a safe point between items, and returns the list of results.

Reading the items and the results never unpickles anything: items are JSON
(ITEMS.jsonl), and the assembled result is the chunks' JSON result lists
concatenated (:func:`assemble`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from contracts.blobs import Blob
from contracts.events import MAX_CHUNKS
from contracts.package import PackageError, PackageTooLarge, dumps_state, result_as_json

#: the runner's name in the chunk module; a leading underscore keeps it out
#: of the entry suggestions, the prefix out of the owner's names
CHUNK_ENTRY = "_market_map_chunk"
#: the reduce runner's name in a reduce job's module
REDUCE_ENTRY = "_market_map_reduce"
#: the input file a reduce reads its chunks' results from when they are too large for its state
REDUCE_CHUNKS_INPUT = "chunks.pickle"

# The runner is source, not a function of this module: it travels inside the
# package and runs on the worker under the module's own globals, where ENTRY is.
CHUNK_RUNNER_SOURCE = b'''

def _market_map_chunk(state):
    """marketctl map's chunk runner: ENTRY(item) for each item, a safe point between items."""
    import inspect
    entry = globals()[state["entry"]]
    items, results = state["items"], state["results"]
    while len(results) < len(items):
        returned = entry(state["inner"] if state["resuming"] else items[len(results)])
        if inspect.isgenerator(returned):
            while True:
                try:
                    state["inner"], state["resuming"] = next(returned), True
                except StopIteration as done:
                    value = done.value
                    break
                yield state  # the item's own safe point: it resumes from its yielded state
        else:
            value = returned
        results.append(value)
        state["inner"], state["resuming"] = None, False
        if len(results) < len(items):
            yield state  # the safe point between items
    return results


def _market_map_reduce(state):
    """marketctl map's reduce runner: FUNC(every item's result, in item order).
    The chunks' results are in the state, or (too large for a message) in the
    input file the state names: a pickled list of bytes and None."""
    import json, pickle
    chunks = state.get("chunks")
    if chunks is None:
        with open("inputs/" + state["chunks_input"], "rb") as source:
            chunks = pickle.load(source)
    results = []
    for blob, size in zip(chunks, state["sizes"]):
        if blob is None:  # a failed chunk (--allow-failures): its items have no result
            results.extend([None] * size)
        elif blob[:1] == b"J":
            results.extend(json.loads(blob[1:]))
        elif blob[:1] == b"D":
            import dill
            results.extend(dill.loads(blob[1:]))
        else:
            results.extend(pickle.loads(blob[1:]))
    return globals()[state["entry"]](results)
'''


class MapError(PackageError):
    """A map that cannot be built: bad items, bad chunk size, too large; one line."""


@dataclass(frozen=True)
class BuiltMap:
    """What ``map.submitted`` carries, before ids and prices."""

    module_source: bytes
    module_sha256: str
    entry: str
    chunks: list[bytes]
    chunk_size: int
    items: int


def read_items(path) -> list:
    """The items of an ITEMS.jsonl file: one JSON value a line (blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MapError(f"{path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise MapError(f"{path} is not UTF-8 text") from e
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise MapError(f"{path.name} line {number} is not JSON: {e.msg} at column {e.colno}") from e
    if not items:
        raise MapError(f"{path.name} has no items (one JSON value a line)")
    return items


def chunk_module(source: bytes) -> bytes:
    """The owner's module with the chunk runner appended."""
    return source.rstrip(b"\n") + b"\n" + CHUNK_RUNNER_SOURCE


def chunk_state(entry: str, items: list) -> dict:
    return {"entry": entry, "items": list(items), "results": [], "inner": None, "resuming": False}


def build_map(source: bytes, entry: str, items: list, chunk_size: int, max_bytes: int) -> BuiltMap:
    """Split ``items`` into chunks of ``chunk_size`` and package them with the runner.

    The whole map (module and every chunk) must fit ``max_bytes``: it travels
    as one message."""
    if chunk_size < 1:
        raise MapError("--chunk must be at least 1")
    count = -(-len(items) // chunk_size)
    if count > MAX_CHUNKS:
        raise MapError(f"{len(items)} items in chunks of {chunk_size} make {count} chunks; the limit is "
                       f"{MAX_CHUNKS}: use a larger --chunk")
    module = chunk_module(source)
    chunks = [dumps_state(chunk_state(entry, items[start:start + chunk_size]), what="the items")
              for start in range(0, len(items), chunk_size)]
    size = len(module) + sum(map(len, chunks))
    if size > max_bytes:
        raise PackageTooLarge(f"the map is {size} bytes (module and items); the limit is {max_bytes}")
    return BuiltMap(module, hashlib.sha256(module).hexdigest(), CHUNK_ENTRY, chunks, chunk_size, len(items))


def map_payload(built: BuiltMap, *, job_id: str, name: str, price: int, max_attempts: int,
                allow_failures: int = 0, network: bool = False, reduce: tuple[bytes, str] | None = None) -> dict:
    """The ``map.submitted`` payload of a built map; ``reduce``: the reduce
    file's source and FUNC."""
    reduce_fields = {"reduce_module": Blob.of(chunk_module(reduce[0])), "reduce_entry": reduce[1]} if reduce else {}
    return {**reduce_fields, "job_id": job_id, "name": name, "price": price, "entry": built.entry,
            "module": Blob(built.module_sha256, built.module_source), "chunks": [Blob.of(c) for c in built.chunks],
            "chunk_size": built.chunk_size, "items": built.items, "max_attempts": max_attempts,
            "allow_failures": allow_failures, "network": network}


def chunk_sizes(items: int, chunk_size: int) -> list[int]:
    """How many items each chunk holds, in order."""
    return [min(chunk_size, items - start) for start in range(0, items, chunk_size)]


def assemble(chunk_results: list[bytes | None], sizes: list[int]) -> list:
    """The map's results in item order: each chunk's JSON result list, a
    failed chunk's items as null. Never unpickles (``ResultNotJSON``)."""
    results = []
    for blob, size in zip(chunk_results, sizes, strict=True):
        if blob is None:
            results.extend([None] * size)
            continue
        values = result_as_json(blob)
        if not isinstance(values, list) or len(values) != size:
            raise MapError(f"a chunk's result is not a list of its {size} items' results")
        results.extend(values)
    return results
