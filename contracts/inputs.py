"""A job's input files: named blob references (issue 17).

``job.submitted`` names each input as ``{"name", "sha256", "size"}``; the
bytes were put in the blob store before (upload-before-publish), and the
ledger accepts the job only if the store holds them. The job reads them,
read-only, as ``inputs/<name>`` in its scratch directory.
"""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

#: most input files one job may have
MAX_INPUTS = 16
#: largest input file the contract allows (MARKET_MAX_INPUT_BYTES may lower it)
MAX_INPUT_BYTES = 1024 ** 3
#: an input's file name: no path separator, no leading dot (so never "." or "..")
INPUT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$"
#: the folder of a job's scratch directory (its cwd) that holds its inputs (sandbox.scratch says the same)
INPUTS_FOLDER = "inputs"


class InputRef(Schema):
    name = fields.String(required=True, validate=validate.Regexp(
        INPUT_NAME_PATTERN, error="not a valid input file name (letters, digits, _.+-, at most 100, no /)"))
    sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    size = fields.Integer(strict=True, required=True, validate=validate.Range(min=0, max=MAX_INPUT_BYTES))


class _Inputs(fields.List):
    def __init__(self, **kwargs):
        super().__init__(fields.Nested(InputRef), validate=validate.Length(max=MAX_INPUTS), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        names = [item["name"] for item in result]
        if len(set(names)) != len(names):
            raise ValidationError("two inputs have the same name")
        return result


def Inputs(**kwargs) -> fields.Field:
    """The ``inputs`` field of an event: at most MAX_INPUTS, names unique."""
    return _Inputs(**kwargs)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an input's file name, or None."""
    import re

    if not re.match(INPUT_NAME_PATTERN, name):
        return "the file name must be letters, digits and _.+- (at most 100, not starting with a dot)"
    return None


def input_ref(name: str, sha256: str, size: int) -> dict:
    return {"name": name, "sha256": sha256, "size": size}
