"""`marketctl submit --input FILE`: upload-before-publish of a job's input files (issue 17).

Each file goes into the blob store first, by its sha256; the submission
then names it (``{"name", "sha256", "size"}``) and the ledger accepts the
job only if the store holds those bytes. The same file given to two jobs is
stored once. The job reads it, read-only, as ``inputs/<file name>``.
"""
from __future__ import annotations

import os

from blobstore import BlobStoreError, open_store
from common.errors import MarketError
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


def upload_inputs(settings, named: list[tuple[str, str]], store=None) -> list[dict]:
    """Put each file in the blob store; the references the submission carries."""
    store = store or open_store(settings)
    refs = []
    for name, path in named:
        try:
            ref = store.put_file(path)
        except BlobStoreError as e:
            raise InputError(f"--input {path}: {e}") from e
        refs.append(input_ref(name, ref.sha256, ref.size))
    return refs
