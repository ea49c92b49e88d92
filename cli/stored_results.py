"""`marketctl result` for a result in the blob store (issue 17): the ledger's
query side answers with a read grant (a path, or a presigned URL), never the
bytes; the result is fetched through it and checked against its sha256."""
from __future__ import annotations

import base64
import os
import tempfile

from blobstore.transfer import fetch
from contracts.blobs import BlobRef


def save_result(answer: dict, path) -> int:
    """Write the answered result to ``path`` (fetched, checked, then renamed into place); its size."""
    if "grant" not in answer:
        data = base64.b64decode(answer["data"])
        with open(path, "wb") as out:
            out.write(data)
        return len(data)
    folder = os.path.dirname(os.path.abspath(path))
    partial = tempfile.mktemp(dir=folder, prefix=".result-")
    fetch(answer["grant"], BlobRef(answer["sha256"], answer["size"]), partial)
    os.replace(partial, path)
    return answer["size"]


def result_bytes(answer: dict) -> bytes:
    """The answered result's bytes (a JSON result is read whole to print it)."""
    if "grant" not in answer:
        return base64.b64decode(answer["data"])
    with tempfile.TemporaryDirectory(prefix="market-result-") as folder:
        path = os.path.join(folder, "result")
        fetch(answer["grant"], BlobRef(answer["sha256"], answer["size"]), path)
        with open(path, "rb") as source:
            return source.read()
