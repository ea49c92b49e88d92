"""Map jobs' packages (contracts.maps): the chunk runner a chunk carries runs
ENTRY over its items under the job contract, stops at any safe point and
resumes from the pickled state, as a worker would drive it; the codec carries
a list of chunk blobs; bad items get one clear line."""
from __future__ import annotations

import hashlib
import pickle

import pytest

from contracts.blobs import Blob
from contracts.envelope import Codec
from contracts.errors import BlobMismatch, BlobTooLarge
from contracts.maps import (CHUNK_ENTRY, REDUCE_ENTRY, MapError, assemble, build_map, chunk_module, map_payload,
                            read_items)
from contracts.package import PackageTooLarge, ResultNotJSON, dumps_result, dumps_state, load_module, loads_state

SOURCE = b'''
def square(item):
    return item * item

def slow_square(item):
    # a generator entry: a safe point of its own in the middle of an item
    state = {"item": item, "half": None} if not isinstance(item, dict) else item
    if state["half"] is None:
        state["half"] = state["item"]
        yield state
    return state["half"] * state["item"]

def total(results):
    return sum(r for r in results if r is not None)
'''


def run_with_stops(module, state_blob: bytes, stop_every: int):
    """Drive the chunk runner as a worker does: stop at every ``stop_every``-th
    safe point, serialize the state, resume a fresh call from it."""
    stops = 0
    while True:
        generator = getattr(module, CHUNK_ENTRY)(loads_state(state_blob))
        safe_points = 0
        try:
            while True:
                state = next(generator)
                safe_points += 1
                if safe_points == stop_every:
                    state_blob = dumps_state(state)  # the checkpoint
                    stops += 1
                    break
        except StopIteration as done:
            return done.value, stops


def loaded(source: bytes = SOURCE):
    module_source = chunk_module(source)
    return load_module(module_source, hashlib.sha256(module_source).hexdigest())


@pytest.mark.parametrize("entry", ["square", "slow_square"])
@pytest.mark.parametrize("stop_every", [1, 2, 1000])
def test_a_chunk_gives_its_items_results_in_order_however_often_it_is_stopped(entry, stop_every):
    # Given a map of 7 items in chunks of 3
    built = build_map(SOURCE, entry, list(range(1, 8)), 3, 1 << 20)
    module = load_module(built.module_source, built.module_sha256)
    # When each chunk runs, stopped and resumed at its safe points
    results = [run_with_stops(module, chunk, stop_every) for chunk in built.chunks]
    # Then the results are the items' in order, and the chunks really stopped between items
    assert [value for value, _ in results] == [[1, 4, 9], [16, 25, 36], [49]]
    if stop_every == 1:
        assert results[0][1] >= 2
    assembled = assemble([dumps_result(value) for value, _ in results], [3, 3, 1])
    assert assembled == [n * n for n in range(1, 8)]


def test_the_reduce_runner_reads_json_and_pickled_chunk_results_and_null_for_a_failed_chunk():
    # Given
    module = loaded()
    chunks = [dumps_result([1, 4]), None, dumps_state((9, 16))]
    # When
    value = getattr(module, REDUCE_ENTRY)({"entry": "total", "chunks": chunks, "sizes": [2, 2, 2]})
    # Then
    assert value == 30


def test_assemble_never_unpickles_and_puts_null_for_a_failed_chunk():
    assert assemble([dumps_result([1]), None], [1, 2]) == [1, None, None]
    with pytest.raises(ResultNotJSON):
        assemble([dumps_state((1,))], [1])
    with pytest.raises(MapError, match="not a list of its 2 items' results"):
        assemble([dumps_result([1])], [2])


def test_the_codec_carries_a_list_of_chunk_blobs_and_checks_each():
    # Given
    codec = Codec(max_blob_bytes=4000)
    built = build_map(SOURCE, "square", list(range(10)), 4, 1 << 20)
    payload = map_payload(built, job_id="m1", name="squares", price=1_000_000, max_attempts=2,
                          reduce=(SOURCE, "total"))
    # When
    _, body = codec.encode("map.submitted", payload)
    envelope = codec.decode(body, "alice")
    # Then every chunk is stored once and referenced in order
    assert [c["sha256"] for c in envelope.payload["chunks"]] == [Blob.of(c).sha256 for c in built.chunks]
    assert all(envelope.blobs[Blob.of(c).sha256] == c for c in built.chunks)
    assert envelope.payload["reduce_entry"] == "total" and envelope.payload["reduce_module"]["sha256"] in envelope.blobs
    assert pickle.loads(built.chunks[2][1:])["items"] == [8, 9]
    # And a forged chunk (bytes that do not hash to its address) or an oversize one is refused
    forged = body.replace(payload["chunks"][1].to_wire()["data"].encode(), Blob.of(b"P other").to_wire()["data"].encode())
    with pytest.raises(BlobMismatch):
        codec.decode(forged, "alice")
    big = map_payload(build_map(SOURCE, "square", ["x" * 5000], 1, 1 << 20), job_id="m2", name="big",
                      price=1_000_000, max_attempts=2)
    with pytest.raises(BlobTooLarge):
        codec.decode(Codec().encode("map.submitted", big)[1], "alice")


def test_bad_items_and_sizes_get_one_clear_line(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('1\n\n{"a": 2}\nnot json\n')
    with pytest.raises(MapError, match=r"items.jsonl line 4 is not JSON"):
        read_items(items)
    items.write_text("\n\n")
    with pytest.raises(MapError, match="has no items"):
        read_items(items)
    with pytest.raises(MapError, match="no such file|No such file"):
        read_items(tmp_path / "missing.jsonl")
    with pytest.raises(MapError, match="the limit is 1000: use a larger --chunk"):
        build_map(SOURCE, "square", list(range(1001)), 1, 1 << 20)
    with pytest.raises(PackageTooLarge, match="the map is"):
        build_map(SOURCE, "square", ["x" * 5000], 1, 4096)
