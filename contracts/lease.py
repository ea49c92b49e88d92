"""The lease message: what the ledger's relay delivers to a worker's lease
queue when it grants a lease. The ``lease.granted`` payload, plus the bytes
the worker needs to run the job (module source and state), sent once here
so workers never read the ledger."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson

from contracts.errors import BlobMismatch, InvalidPayload


@dataclass(frozen=True)
class LeaseMessage:
    event_id: str
    lease_id: str
    job_id: str
    worker_id: str
    checkpoint: int
    lease_seconds: int
    deadline: str
    entry: str
    kind: str
    probe: bool
    module_sha256: str
    module_source: bytes
    state_sha256: str
    state: bytes
    #: the job may use the worker's network (it asked, and this worker allows it); loopback only otherwise
    network: bool = False
    #: issue 17: the job's input files, each with the worker's grant to fetch it
    inputs: tuple["LeaseInput", ...] = ()
    #: micro-credits per hour (for the worker's status screen; the ledger pays by its own record)
    price: int | None = None
    #: issue 17: a state too large for a message is in the blob store: the grant to read
    #: it (``state`` is then empty; the worker fetches it and checks it against
    #: ``state_sha256`` and ``state_size``)
    state_grant: dict | None = None
    state_size: int | None = None
    #: issue 17: what -> the grant to write ``uploads/<lease_id>/<what>`` ("checkpoint",
    #: "result", "artifacts"), for a state or result too large for a report message
    upload_grants: dict | None = None


@dataclass(frozen=True)
class LeaseInput:
    """One input file of a lease: its name under ``inputs/``, its address, and
    the grant (``{"path"}`` or ``{"url"}``) the ledger gave this lease to read it."""

    name: str
    sha256: str
    size: int
    grant: dict


def encode_lease_message(event_id: str, granted: dict, module_source: bytes, state: bytes,
                         input_grants: list[dict] | None = None, state_grant: dict | None = None,
                         upload_grants: dict | None = None) -> bytes:
    """``state_grant`` (issue 17): ``{"grant", "size"}`` for a state in the blob store, whose
    bytes ``state`` then leaves out; ``upload_grants``: what -> grant of the lease's upload keys."""
    message = {
        "event_id": event_id, "lease": granted,
        "module": base64.b64encode(module_source).decode("ascii"),
        "state": base64.b64encode(state).decode("ascii"),
    }
    if input_grants:
        message["input_grants"] = input_grants
    if state_grant:
        message["state_grant"] = state_grant
    if upload_grants:
        message["upload_grants"] = upload_grants
    return orjson.dumps(message)


def _lease_inputs(lease: dict, grants) -> tuple[LeaseInput, ...]:
    inputs = lease.get("inputs") or []
    if len(grants or []) != len(inputs):
        raise ValueError("a lease with inputs needs one grant per input")
    return tuple(LeaseInput(str(item["name"]), str(item["sha256"]), int(item["size"]), dict(grant))
                 for item, grant in zip(inputs, grants or []))


def _stored_state(stored) -> dict:
    if not stored:
        return {}
    size = stored["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("a stored state's size is a whole number of bytes")
    return {"state_grant": dict(stored["grant"]), "state_size": size}


def decode_lease_message(body: bytes) -> LeaseMessage:
    """Parse and check a lease message; blobs must hash to what the lease names."""
    try:
        raw = orjson.loads(body)
        lease = raw["lease"]
        module, state = base64.b64decode(raw["module"]), base64.b64decode(raw["state"])
        message = LeaseMessage(
            event_id=raw["event_id"], lease_id=lease["lease_id"], job_id=lease["job_id"],
            worker_id=lease["worker_id"], checkpoint=lease["checkpoint"], lease_seconds=lease["lease_seconds"],
            deadline=lease["deadline"], entry=lease["entry"], kind=lease["kind"], probe=lease["probe"],
            module_sha256=lease["module_sha256"], module_source=module, state_sha256=lease["state_sha256"],
            state=state, network=lease.get("network", False) is True,
            inputs=_lease_inputs(lease, raw.get("input_grants")),
            price=lease["price"] if isinstance(lease.get("price"), int) else None,
            upload_grants=dict(raw["upload_grants"]) if raw.get("upload_grants") else None,
            **_stored_state(raw.get("state_grant")))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InvalidPayload(f"malformed lease message: {e!r}") from e
    checked = [("module", module, message.module_sha256)]
    if message.state_grant is None:
        checked.append(("state", state, message.state_sha256))  # a stored state is checked as it is fetched
    for name, data, sha in checked:
        if hashlib.sha256(data).hexdigest() != sha:
            raise BlobMismatch(f"lease {message.lease_id}: {name} bytes do not match sha256 {sha[:12]}")
    return message
