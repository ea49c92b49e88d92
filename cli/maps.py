"""marketctl map: one function over many items, in chunks that run as jobs (issue 17).

``map`` checks the module in the sandbox, running ENTRY on the first item
as a chunk would (cli.map_check), splits the
items into chunks and sends one ``map.submitted``; the ledger makes the map
and its chunk jobs (ledger.fold_maps). ``result MAP`` assembles the chunks'
JSON results here, in item order, or runs the reduce as a job of its own on
a worker (never here: results may be pickles, which only a sandbox opens).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os

from broker_setup.rpc import QueryRefused, Refused
from cli.jobs import UsageError, ask, wait_for_job
from cli.money import parse_credits
from cli.requests import send_and_check
from contracts.blobs import Blob
from contracts.maps import REDUCE_CHUNKS_INPUT, REDUCE_ENTRY, assemble, build_map, chunk_module, map_payload, read_items
from contracts.package import PackageError, dumps_state, new_job_id, parse_target, read_source, result_as_json


def _checked_module(settings, target: str, confined: bool, items: list | None = None,
                    items_name: str = "") -> tuple[bytes, str]:
    """The source of FILE.py and its ENTRY, checked in the sandbox as a chunk runs (cli.map_check):
    with ``items``, ENTRY runs on the first; without, FILE.py is a reduce's."""
    path, entry = parse_target(target)
    source = read_source(path)
    from cli.map_check import check_map_module, check_reduce_module
    from sandbox import CONFINED, UNSAFE
    confinement = CONFINED if confined else UNSAFE
    if items is None:
        check_reduce_module(source, entry, filename=path.name, max_bytes=settings.max_blob_bytes,
                            confinement=confinement)
    else:
        check_map_module(source, entry, items[0], filename=path.name, items_name=items_name,
                         max_bytes=settings.max_blob_bytes, confinement=confinement)
    return source, entry


def build_map_submission(settings, args) -> dict:
    """Everything ``map`` checks before it publishes anything (exit code 2 on any of it)."""
    price = parse_credits(args.price, what="price")
    if not 1 <= args.max_attempts <= 100:
        raise UsageError("--max-attempts must be between 1 and 100")
    if args.allow_failures < 0:
        raise UsageError("--allow-failures must be 0 or more")
    try:
        items = read_items(args.items)
        source, entry = _checked_module(settings, args.target, not args.unsafe_no_sandbox, items,
                                        os.path.basename(args.items))
        reduce = _checked_module(settings, args.reduce, not args.unsafe_no_sandbox) if args.reduce else None
        built = build_map(source, entry, items, args.chunk, settings.max_blob_bytes)
    except PackageError as e:
        raise UsageError(str(e)) from e
    return map_payload(built, job_id=new_job_id(), name=args.name, price=price, max_attempts=args.max_attempts,
                       allow_failures=args.allow_failures, network=args.network, reduce=reduce)


def cmd_map(settings, args) -> int:
    payload = build_map_submission(settings, args)
    send_and_check(settings, args.account, "map.submitted", payload, args.request_id)
    job_id = payload["job_id"]
    if args.wait:
        job = wait_for_job(settings, args.account, job_id, quiet=args.json)
        if job["status"] != "completed":
            raise Refused(f"map {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""))
        value = map_result(settings, args.account, job_id, quiet=args.json)
        print(json.dumps({"job_id": job_id, "chunks": len(payload["chunks"]), "result": value}) if args.json
              else json.dumps(value))
        return 0
    print(json.dumps({"job_id": job_id, "chunks": len(payload["chunks"])}) if args.json else job_id)
    return 0


def map_result(settings, account: str, job_id: str, answer: dict | None = None, quiet: bool = False):
    """A completed map's result: its items' results in order, or its reduce's."""
    answer = answer or asyncio.run(ask(settings, account, "result", {"job_id": job_id}))
    found = answer["map"]
    chunks = [chunk_bytes(c) for c in found["chunks"]]
    if "reduce" not in found:
        try:
            return assemble(chunks, found["sizes"])
        except PackageError as e:
            raise UsageError(f"{e}; the chunks' results are pickles: map with --reduce to combine them "
                             "on a worker") from e
    reduce = found["reduce"]
    _start_reduce(settings, account, job_id, reduce, chunks, found["sizes"])
    job = wait_for_job(settings, account, reduce["job_id"], quiet=quiet)
    if job["status"] != "completed":
        raise Refused(f"the reduce job {reduce['job_id']} {job['status']}"
                      + (f": {job['error'].strip().splitlines()[-1]}" if job.get("error") else ""))
    from cli.stored_results import result_bytes

    data = result_bytes(asyncio.run(ask(settings, account, "result", {"job_id": reduce["job_id"]})))
    try:
        return result_as_json(data)
    except PackageError as e:
        raise UsageError(f"{e} (job {reduce['job_id']})") from e


def chunk_bytes(chunk) -> bytes | None:
    """A chunk's result as the ``result`` answer gives it: base64, a read grant for
    one in the blob store (fetched and checked), or None for a failed chunk."""
    from cli.stored_results import result_bytes

    if chunk is None:
        return None
    return result_bytes(chunk) if isinstance(chunk, dict) else base64.b64decode(chunk)


def _start_reduce(settings, account: str, map_id: str, reduce: dict, chunks: list, sizes: list[int]) -> None:
    """Submit the map's reduce job, with the chunks' results (opaque bytes) as
    its state, unless an earlier ``result`` already did."""
    try:
        asyncio.run(ask(settings, account, "job", {"job_id": reduce["job_id"]}))
        return
    except QueryRefused:
        pass  # not submitted yet
    info = asyncio.run(ask(settings, account, "map", {"job_id": map_id}))
    module = base64.b64decode(reduce["module"])
    state = dumps_state({"entry": reduce["entry"], "chunks": chunks, "sizes": sizes}, what="the chunks' results")
    inputs = []
    if len(module) + len(state) > min(settings.max_blob_bytes, settings.inline_blob_bytes):
        # too large for a message: the chunks' results go to the reduce as an input file,
        # through the blob store (issue 17), and the state only names it
        inputs = _chunks_as_input(settings, account, chunks)
        state = dumps_state({"entry": reduce["entry"], "chunks_input": REDUCE_CHUNKS_INPUT, "sizes": sizes},
                            what="the reduce's state")
    payload = {"job_id": reduce["job_id"], "name": f"{info['name'][:190]} (reduce)", "price": info["price"],
               "entry": REDUCE_ENTRY, "kind": "function", "module": Blob.of(module), "state": Blob.of(state),
               "max_attempts": 3, **({"inputs": inputs} if inputs else {})}
    try:
        send_and_check(settings, account, "job.submitted", payload)
    except Refused as e:
        if "already taken" not in str(e):  # a concurrent `result` submitted it first
            raise


def _chunks_as_input(settings, account: str, chunks: list) -> list[dict]:
    """Upload the chunks' results (a pickled list of bytes and None) as the reduce's input file."""
    import pickle
    import tempfile

    from cli.inputs import InputError, upload_inputs

    with tempfile.TemporaryDirectory(prefix="market-reduce-") as folder:
        path = os.path.join(folder, REDUCE_CHUNKS_INPUT)
        with open(path, "wb") as out:
            pickle.dump(chunks, out, protocol=pickle.HIGHEST_PROTOCOL)
        if os.path.getsize(path) > settings.max_input_bytes:
            raise InputError(f"the chunks' results are {os.path.getsize(path)} bytes: too large for one reduce job "
                             f"(the limit of an input file is {settings.max_input_bytes}, MARKET_MAX_INPUT_BYTES)")
        return upload_inputs(settings, account, [(REDUCE_CHUNKS_INPUT, path)])


def print_map_result(settings, args, answer: dict) -> int:
    """``marketctl result MAP``."""
    if args.raw:
        raise UsageError(f"job {args.job_id} is a map: its result is assembled from its chunks; "
                         f"use --raw on a chunk ({args.job_id}.c1, ...)")
    value = map_result(settings, args.account, args.job_id, answer, quiet=args.json)
    print(json.dumps({"job_id": args.job_id, "result": value}) if args.json else json.dumps(value))
    return 0


def folded(jobs: list[dict]) -> list[tuple[dict, bool]]:
    """The jobs page with each map's chunks folded under it: (job, is a chunk shown under its map)."""
    shown_maps = {job["job_id"] for job in jobs if job.get("chunks")}
    chunks: dict[str, list[dict]] = {}
    for job in jobs:
        if job.get("map_id") in shown_maps:
            chunks.setdefault(job["map_id"], []).append(job)
    out = []
    for job in jobs:
        if job.get("map_id") in shown_maps:
            continue
        out.append((job, False))
        out += [(chunk, True) for chunk in sorted(chunks.get(job["job_id"], ()), key=lambda c: c["chunk"])]
    return out


def register(commands, command) -> None:
    from cli.request_ids import add_request_id

    sub = command("map", cmd_map, "run FILE.py:ENTRY over every item of ITEMS.jsonl, in chunks that run as jobs "
                  "in parallel; prints the map's job id")
    sub.add_argument("target", metavar="FILE.py:ENTRY", help="the module and the function called with each item")
    sub.add_argument("--items", required=True, metavar="ITEMS.jsonl", help="one JSON value a line: the items")
    sub.add_argument("--name", required=True, help="a name for the map")
    sub.add_argument("--price", required=True, help="credits per hour of execution of each chunk, e.g. 5.2")
    sub.add_argument("--chunk", type=int, default=10, help="items per chunk (default 10)")
    sub.add_argument("--reduce", metavar="FILE.py:FUNC",
                     help="FUNC(list of every item's result, in order) gives the map's result; it runs as a job "
                          "of its own (MAP.reduce) when `result MAP` first asks for it")
    sub.add_argument("--allow-failures", type=int, default=0,
                     help="chunks that may fail (their items' results are null) before the map fails (default 0)")
    sub.add_argument("--max-attempts", type=int, default=3, help="runs a chunk may error before it fails (default 3)")
    sub.add_argument("--network", action="store_true", help="ask for the network, as `submit --network`")
    sub.add_argument("--wait", action="store_true", help="show progress until the map ends, then print the result")
    sub.add_argument("--json", action="store_true", help='print {"job_id": MAP, "chunks": K}')
    sub.add_argument("--unsafe-no-sandbox", action="store_true",
                     help="load the module to check it as your own user, where this machine cannot confine it")
    add_request_id(sub)
