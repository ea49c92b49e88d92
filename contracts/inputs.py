"""A job's input files: named blob references (issue 17).

``job.submitted`` names each input as ``{"name", "sha256", "size"}``; the
bytes were put in the blob store before (upload-before-publish), and the
ledger accepts the job only if the store holds them. The job reads them,
read-only, as ``inputs/<name>`` in its scratch directory.

A member with no access to the store asks the ledger's query side for
upload grants (``upload_grants``: ledger.upload_grants): one upload key of
its own per file (``uploads/<owner tag>.<nonce>/input``) and a grant to
write it. Its submission names the key (``upload``), and the ledger adopts
the upload, hash-checked, before it folds the submission.
"""
from __future__ import annotations

import hashlib
import re

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

#: most input files one job may have
MAX_INPUTS = 16
#: largest input file the contract allows (MARKET_MAX_INPUT_BYTES may lower it)
MAX_INPUT_BYTES = 1024 ** 3
#: an input's file name: no path separator, no leading dot (so never "." or "..")
INPUT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$"
#: the folder of a job's scratch directory (its cwd) that holds its inputs (sandbox.scratch says the same)
INPUTS_FOLDER = "inputs"
#: a member's upload key: its owner's tag (:func:`owner_tag`), a random nonce, always the file ``input``
MEMBER_UPLOAD_KEY = r"^uploads/([0-9a-f]{16})\.[0-9a-f]{32}/input$"


class InputRef(Schema):
    name = fields.String(required=True, validate=validate.Regexp(
        INPUT_NAME_PATTERN, error="not a valid input file name (letters, digits, _.+-, at most 100, no /)"))
    sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    size = fields.Integer(strict=True, required=True, validate=validate.Range(min=0, max=MAX_INPUT_BYTES))


class SubmittedInputRef(InputRef):
    #: the member's upload the ledger adopts as this input (absent: the store holds it already)
    upload = fields.String(validate=validate.Regexp(MEMBER_UPLOAD_KEY, error="not a member's upload key"))


class _Inputs(fields.List):
    def __init__(self, ref=InputRef, **kwargs):
        super().__init__(fields.Nested(ref), validate=validate.Length(max=MAX_INPUTS), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        names = [item["name"] for item in result]
        if len(set(names)) != len(names):
            raise ValidationError("two inputs have the same name")
        return result


def Inputs(submitted: bool = False, **kwargs) -> fields.Field:
    """The ``inputs`` field of an event: at most MAX_INPUTS, names unique;
    ``submitted``: a submission's, whose inputs may name an upload."""
    return _Inputs(SubmittedInputRef if submitted else InputRef, **kwargs)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an input's file name, or None."""
    if not re.match(INPUT_NAME_PATTERN, name):
        return "the file name must be letters, digits and _.+- (at most 100, not starting with a dot)"
    return None


def input_ref(name: str, sha256: str, size: int) -> dict:
    return {"name": name, "sha256": sha256, "size": size}


def owner_tag(account: str) -> str:
    """The account's part of its upload keys: the ledger adopts an upload only for its owner."""
    return hashlib.sha256(account.encode()).hexdigest()[:16]


def upload_key(account: str, nonce: str) -> str:
    """A member's upload key (``nonce``: 32 random hex digits)."""
    return f"uploads/{owner_tag(account)}.{nonce}/input"


def upload_owned_by(key: str, account: str) -> bool:
    match = re.match(MEMBER_UPLOAD_KEY, key)
    return match is not None and match.group(1) == owner_tag(account)
