"""`marketctl submit --input FILE`: upload-before-publish of a job's input files (issue 17).

``marketctl`` never holds the blob store's credentials: it hashes each file,
asks the ledger's query side for upload grants (``upload_grants``,
ledger.upload_grants), and sends each file the store does not hold yet
through its grant (a presigned PUT URL for one upload key of the member's
own, or a path on a one-machine market). The submission then names each
file (``{"name", "sha256", "size"}``, and ``upload``: the key it was sent to)
and the ledger adopts the uploads, hash-checked, before it accepts the job. A
file the store holds already (by sha256) is not sent again: stored once,
shared. The job reads it, read-only, as ``inputs/<file name>``.
"""
from __future__ import annotations

import asyncio
import os

from blobstore import BlobStoreError
from blobstore.transfer import upload
from common.errors import MarketError
from contracts.blobs import hash_file
from contracts.inputs import MAX_INPUTS, input_ref, name_problem


class InputError(MarketError):
    """An input file that cannot be a job's input; one line for the user."""

    exit_code = 2


def check_input_files(settings, paths: list[str]) -> list[tuple[str, str]]:
    """(name, path) of each file, checked before anything is uploaded or published."""
    if len(paths) > MAX_INPUTS:
        raise InputError(f"a job has at most {MAX_INPUTS} input files; {len(paths)} were given")
    named: list[tuple[str, str]] = []
    for path in paths:
        name = os.path.basename(path)
        problem = name_problem(name)
        if problem:
            raise InputError(f"--input {path}: {problem}")
        if name in (seen[0] for seen in named):
            raise InputError(f"--input {path}: another input is named {name} too")
        try:
            size = os.stat(path).st_size
        except OSError as e:
            raise InputError(f"--input {path}: {e.strerror or e}") from e
        if not os.path.isfile(path):
            raise InputError(f"--input {path}: not a regular file")
        if size > settings.max_input_bytes:
            raise InputError(f"--input {path} is {size} bytes; the limit is {settings.max_input_bytes} "
                             "(MARKET_MAX_INPUT_BYTES)")
        named.append((name, path))
    return named


def upload_inputs(settings, account: str, named: list[tuple[str, str]]) -> list[dict]:
    """Send each file the store lacks through the ledger's upload grants; the references the submission carries."""
    from cli.jobs import ask

    hashed = [(name, path, hash_file(path)) for name, path in named]
    distinct = list(dict.fromkeys(ref for _, _, ref in hashed))
    answer = asyncio.run(ask(settings, account, "upload_grants",
                             {"files": [ref.to_wire() for ref in distinct]}))
    granted = {(item["sha256"], item["size"]): item for item in answer["files"]}
    refs, sent = [], set()
    for name, path, ref in hashed:
        item, found = input_ref(name, ref.sha256, ref.size), granted[(ref.sha256, ref.size)]
        if not found["stored"] and found["upload"] not in sent:
            try:
                upload(found["grant"], path)
            except (BlobStoreError, OSError) as e:
                raise InputError(f"--input {path}: {e}") from e
            sent.add(found["upload"])
            item["upload"] = found["upload"]  # a second input of the same bytes needs no upload of its own
        refs.append(item)
    return refs
