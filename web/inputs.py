"""The portal's submit form takes input files (issue 17): each upload is put
in the blob store, by its sha256, before the submission that names it is
published, exactly as `marketctl submit --input` does."""
from __future__ import annotations

import shutil
import tempfile

from starlette.concurrency import run_in_threadpool

from blobstore import BlobStoreError, open_store
from contracts.inputs import MAX_INPUTS, input_ref, name_problem


class InputProblem(Exception):
    """An input file the portal refuses: ``detail`` is the member's one line, ``status`` the HTTP code."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__(detail)
        self.detail, self.status = detail, status


def uploaded_files(form) -> list:
    """The form's ``inputs`` files that were chosen (a browser sends an empty one for none)."""
    return [item for item in form.getlist("inputs") if not isinstance(item, str) and item.filename]


async def store_inputs(app_state, files: list) -> list[dict]:
    """Check and store each uploaded input; the references for ``job.submitted``."""
    if len(files) > MAX_INPUTS:
        raise InputProblem(f"a job has at most {MAX_INPUTS} input files; {len(files)} were chosen")
    names = [upload.filename for upload in files]
    for name in names:
        problem = name_problem(name)
        if problem:
            raise InputProblem(f"input {name}: {problem}")
    if len(set(names)) != len(names):
        raise InputProblem("two input files have the same name")
    limit = app_state.settings.max_input_bytes
    for upload in files:
        if upload.size is not None and upload.size > limit:
            raise InputProblem(f"input {upload.filename} is {upload.size} bytes; the limit is {limit}", 413)
    store = getattr(app_state, "blob_store", None)
    if store is None:
        store = app_state.blob_store = open_store(app_state.settings)
    refs = []
    for upload in files:
        try:
            ref = await run_in_threadpool(_put, store, upload.file)
        except BlobStoreError as e:
            raise InputProblem(f"input {upload.filename} could not be stored: {e}", 503) from e
        refs.append(input_ref(upload.filename, ref.sha256, ref.size))
    return refs


def _put(store, stream):
    # the upload is spooled already (memory or disk): one copy to a named file the store reads
    stream.seek(0)
    with tempfile.NamedTemporaryFile(prefix="market-input-") as spooled:
        shutil.copyfileobj(stream, spooled, 1024 * 1024)
        spooled.flush()
        return store.put_file(spooled.name)
