"""Canaries a worker cannot tell from members' jobs (issue 15).

A canary is the probe's work (probe_job.py: an n x n matrix product from a
seed, modulo a prime) sent to a measured worker as if a member had
submitted it, to check it still delivers the speed its probe showed. Its
lease already says ``probe: false`` (ledger.fold_speeds); what the worker
sees besides is made to look like any member's job:

- **job id**: a member's shape (``job-`` and 12 hex digits: contracts.package.new_job_id);
- **entry**: a name drawn from the names members' jobs use;
- **source**: the probe's algorithm written anew each time: drawn
  identifiers and state keys, no docstring, the helper before or after the
  entry, the inner product as a loop or a ``sum``, its constants (the
  generator's multiplier, the values' bound, the checksum's multiplier)
  drawn and its modulus spelled several ways, so no fixed string or hash of
  the probe's module is in it;
- **state**: a plain dict under those keys, its size drawn around the
  probe's (the work, n**3, goes with it to the ledger);
- **price**: drawn from the prices of the jobs competing in the market now
  (the ledger's ``market_prices`` query), so it is neither nominal nor fixed.

What stays detectable (said, not hidden): the algorithm itself, to a worker
that reads the code and recognises a seeded matrix checksum; a plain
function (no safe point) of a few seconds; after the fact, that its lease
is never paid (canaries are the market's own, unbilled); and timing, the
canaries come 0.5 to 1.5 canary intervals apart per worker.

Pure: the caller passes the random source and the prices.
"""
from __future__ import annotations

import hashlib
import random

from agents.speedprobe import probe_job
from contracts.blobs import Blob
from contracts.package import dumps_result, dumps_state, new_job_id

#: entry names of the kind members give their jobs' functions
ENTRY_NAMES = ("run", "main", "compute", "solve", "work", "process", "job", "task", "calculate", "simulate",
               "search", "evaluate", "transform", "analyse", "crunch", "execute", "handle", "go")
#: identifiers the canary's code and state are written with (each drawn once per canary)
WORDS = ("data", "items", "values", "grid", "table", "acc", "buf", "size", "count", "limit", "base", "key",
         "xs", "ys", "parts", "block", "chunk", "left", "right", "total", "item", "rows", "cols", "seed_value",
         "width", "height", "depth", "level", "steps", "matrix", "pairs", "scale", "factor", "offset", "start",
         "stop", "span", "cells", "entries", "record", "batch", "frame", "window", "cursor", "index", "state_in",
         "params", "config", "inputs", "source", "target", "sample", "points", "weights", "bias", "signal")
#: names a member might give such a job (never shown to the worker; the report shows names)
JOB_NAMES = ("matrix product", "checksum", "simulation", "batch", "grid run", "analysis", "sweep", "benchmark",
             "numbers", "render", "search", "test run", "job")
#: multipliers of a full-period generator modulo 2**31 - 1 (Park and Miller's, and others')
MULTIPLIERS = (16807, 48271, 69621, 39373, 742938285)
#: bounds of the matrices' values
CAPS = (97, 100, 251, 997, 1000, 1009, 1024, 4096)
#: multipliers of the running checksum
MIXES = (31, 33, 37, 131, 257, 65599)
#: ways of writing the prime 2**31 - 1
MODULUS_SPELLINGS = ("2147483647", "2**31 - 1", "(1 << 31) - 1", "0x7FFFFFFF", "2 ** 31 - 1")


def canary_payload(worker_id: str, size: int, rng: random.Random, prices: list[int]) -> dict:
    """The ``job.submitted`` of a canary of ``worker_id``: the probe's work at a
    size drawn around ``size``, at a price drawn from ``prices`` (the market's
    competing jobs; a nominal 1 micro-credit when there are none)."""
    n = max(2, round(size * rng.uniform(0.8, 1.2)))
    seed, multiplier, cap = rng.randrange(1, probe_job.MODULUS), rng.choice(MULTIPLIERS), rng.choice(CAPS)
    mix = rng.choice(MIXES)
    entry = rng.choice(ENTRY_NAMES)
    words = rng.sample(WORDS, 14)
    key_n, key_seed = words[0], words[1]
    source = canary_source(entry, words[2:], key_n, key_seed, (multiplier, cap, mix), rng)
    answer = probe_job.probe({"n": n, "seed": seed, "multiplier": multiplier, "cap": cap, "mix": mix})
    return {"job_id": new_job_id(), "name": f"{rng.choice(JOB_NAMES)} {rng.randrange(1, 1000)}",
            "price": rng.choice(prices) if prices else 1, "entry": entry, "kind": "function",
            "module": Blob.of(source.encode()), "state": Blob.of(dumps_state({key_n: n, key_seed: seed})),
            "max_attempts": 1, "probe": True, "target_worker_id": worker_id,
            "probe_expected_sha256": hashlib.sha256(dumps_result(answer)).hexdigest(), "probe_work": n ** 3,
            "canary": True}


def canary_source(entry: str, names: list[str], key_n: str, key_seed: str, constants: tuple[int, int, int],
                  rng: random.Random) -> str:
    """probe_job.probe written anew: the same result for the same n, seed and
    ``constants`` (multiplier, cap, mix; tests/agents/speedprobe/test_canary_disguise.py runs both)."""
    multiplier, cap, mix = constants
    modulus, helper, value, rows, row, n, seed, a, b, columns, checksum, total = names[:12]
    if rng.random() < 0.5:
        inner = f"{total} = sum(x * y for x, y in zip(r, c))"
    else:
        inner = f"{total} = 0\n            for x, y in zip(r, c):\n                {total} += x * y"
    helper_code = (
        f"def {helper}({seed}, {n}):\n"
        f"    {value} = {seed} % {modulus} or 1\n"
        f"    {rows} = []\n"
        f"    for _ in range(2 * {n}):\n"
        f"        {row} = []\n"
        f"        for _ in range({n}):\n"
        f"            {value} = ({value} * {multiplier}) % {modulus}\n"
        f"            {row}.append({value} % {cap})\n"
        f"        {rows}.append({row})\n"
        f"    return {rows}[:{n}], {rows}[{n}:]\n")
    entry_code = (
        f"def {entry}(state):\n"
        f"    {n}, {seed} = state[{key_n!r}], state[{key_seed!r}]\n"
        f"    {a}, {b} = {helper}({seed}, {n})\n"
        f"    {columns} = list(zip(*{b}))\n"
        f"    {checksum} = 0\n"
        f"    for r in {a}:\n"
        f"        for c in {columns}:\n"
        f"            {inner}\n"
        f"            {checksum} = ({checksum} * {mix} + {total}) % {modulus}\n"
        f"    return {checksum}\n")
    parts = [helper_code, entry_code] if rng.random() < 0.5 else [entry_code, helper_code]
    return f"{modulus} = {rng.choice(MODULUS_SPELLINGS)}\n\n\n" + "\n\n".join(parts)
