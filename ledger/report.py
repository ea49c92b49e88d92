"""The market report: the workers, jobs and dispatches as XML, made for one account.

Pure: the caller reads the rows, the clock and a random key; this module
only decides what the asker may see and writes it. The schema is the file
``market_report.xsd`` next to this module (``schema_text()``).

Privacy: the asker's own workers and jobs appear with their real ids and
their owner. Every other worker, job and lease appears under a pseudonym,
``HMAC-SHA256(key, kind + id)`` truncated, with a key drawn for this report
alone: the same thing has the same pseudonym throughout the report (a
dispatch still names its job and worker), but no pseudonym matches a real id
or the pseudonym of any other report, and nothing names another account.
Other accounts' job names (free text that could name the owner, or be
joined across reports) and all results are left out; speed probe jobs are
not market jobs and are left out with their leases.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
import functools
from importlib import resources
from xml.etree import ElementTree as ET

#: the report's XML namespace; the version in it changes only with an incompatible schema
NAMESPACE = "urn:compute-market:market-report:1"
#: the schema version the ``version`` attribute carries
SCHEMA_VERSION = 1
#: the schema file, shipped as package data of ``ledger``
SCHEMA_FILE = "market_report.xsd"
#: hex digits of HMAC-SHA256 kept in a pseudonym: 64 bits, no collision in any real report
PSEUDONYM_HEX_DIGITS = 16
#: bytes of the per-report key callers should draw (secrets.token_bytes)
KEY_BYTES = 32

#: prefix of the pseudonym of each kind of thing
_PSEUDONYM_PREFIX = {"worker": "anon-w-", "job": "anon-j-", "lease": "anon-l-"}
#: characters XML 1.0 cannot carry at all (a job name is free text)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@functools.cache
def schema_text() -> str:
    """The published XSD the reports conform to (read once: the portal serves it on every request)."""
    return resources.files("ledger").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


class Pseudonyms:
    """Opaque, per-report ids for other accounts' workers, jobs and leases."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 random bytes")
        self._key = key

    def of(self, kind: str, real_id: str) -> str:
        # the kind is part of the message, so a job and a worker sharing an id
        # do not share a pseudonym
        digest = hmac.new(self._key, f"{kind}\0{real_id}".encode(), hashlib.sha256).hexdigest()
        return _PSEUDONYM_PREFIX[kind] + digest[:PSEUDONYM_HEX_DIGITS]


def build_report(*, account: str, generated_at: str, ledger_seq: int, workers: Iterable[Mapping],
                 jobs: Iterable[Mapping], leases: Iterable[Mapping], key: bytes,
                 history: Iterable[Mapping] | None = None) -> bytes:
    """The report for ``account`` as UTF-8 XML that validates against the schema.

    ``workers``, ``jobs`` and ``leases`` are rows of the ledger's projection
    tables of those names (mappings with their column names), all of them,
    probe jobs included (they are filtered here). ``key`` must be fresh
    random bytes for every report and never be kept. ``history``: rows of
    ``report_counters`` (ledger.report_counters), the sums of the dispatches
    that ended, written as the report's ``history``; None: no such element.
    """
    names = Pseudonyms(key)
    workers, jobs, leases = list(workers), list(jobs), list(leases)
    own_workers = {w["worker_id"] for w in workers if w["owner"] == account}
    market_jobs = {j["job_id"]: j for j in jobs if not j["probe"]}
    own_jobs = {job_id for job_id, j in market_jobs.items() if j["owner"] == account}
    busy = {lease["worker_id"] for lease in leases if lease["outcome"] == "open"}

    def worker_id(real: str) -> str:
        return real if real in own_workers else names.of("worker", real)

    def job_id(real: str) -> str:
        return real if real in own_jobs else names.of("job", real)

    # the namespace is declared, not used in tag names: ElementTree would
    # otherwise invent a prefix, and the unqualified attributes stay unqualified
    root = ET.Element("market-report", {
        "xmlns": NAMESPACE, "version": str(SCHEMA_VERSION), "account": account, "generated-at": generated_at,
        "ledger-seq": str(ledger_seq)})

    worker_elements = []
    for w in workers:
        attributes = {"id": worker_id(w["worker_id"])}
        if w["worker_id"] in own_workers:
            attributes["owner"] = account
        if w["speed"] is not None:
            attributes["speed"] = str(w["speed"])
        if w["speed_measured_at"] is not None:
            attributes["speed-measured-at"] = w["speed_measured_at"]
        attributes["state"] = worker_state(w["state"], w["worker_id"] in busy)
        attributes["slots"] = str(w["slots"])
        worker_elements.append(attributes)
    _append_sorted(root, "workers", "worker", worker_elements, key=lambda a: a["id"])

    job_elements = []
    for j in market_jobs.values():
        attributes = {"id": job_id(j["job_id"])}
        if j["job_id"] in own_jobs:
            attributes["owner"] = account
            attributes["name"] = _xml_text(j["name"])
        attributes.update({"price": str(j["price"]), "status": j["status"], "checkpoints": str(j["checkpoint"]),
                           "executed-ms": str(j["executed_ms"])})
        if j["finished_at"] is not None:
            attributes["finished-at"] = j["finished_at"]
        job_elements.append(attributes)
    _append_sorted(root, "jobs", "job", job_elements, key=lambda a: a["id"])

    dispatch_elements = []
    for lease in leases:
        if lease["job_id"] not in market_jobs:
            continue
        # the asker already knows the lease ids of its own jobs and of its own workers' leases
        known = lease["job_id"] in own_jobs or lease["worker_id"] in own_workers
        attributes = {"lease": lease["lease_id"] if known else names.of("lease", lease["lease_id"]),
                      "job": job_id(lease["job_id"]), "worker": worker_id(lease["worker_id"]),
                      "checked-out": lease["granted_at"]}
        if lease["ended_at"] is not None:
            attributes["checked-in"] = lease["ended_at"]
        attributes["outcome"] = lease["outcome"]
        dispatch_elements.append(attributes)
    _append_sorted(root, "dispatches", "dispatch", dispatch_elements,
                   key=lambda a: (a["checked-out"], a["lease"]))
    if history is not None:
        _append_history(root, history, worker_id)

    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _append_history(root: ET.Element, counters: Iterable[Mapping], worker_id) -> None:
    parent = ET.SubElement(root, "history")
    by_worker, by_band = [], []
    for c in counters:
        sums = {"outcome": c["outcome"], "dispatches": str(c["dispatches"]), "executed-ms": str(c["executed_ms"])}
        if c["kind"] == "worker":
            by_worker.append({"worker": worker_id(c["subject"]), **sums})
        else:
            low = int(c["subject"])
            by_band.append({"price-from": str(low), "price-below": str(2 * low), **sums})
    # sorted by what is shown, as every other list of the report
    for attributes in sorted(by_worker, key=lambda a: (a["worker"], a["outcome"])):
        ET.SubElement(parent, "worker-dispatches", attributes)
    for attributes in sorted(by_band, key=lambda a: (int(a["price-from"]), a["outcome"])):
        ET.SubElement(parent, "band-dispatches", attributes)


def _append_sorted(root: ET.Element, group: str, item: str, items: list[dict], key) -> None:
    # sorted by what the report shows, never by real ids: the order of
    # pseudonyms must not hint at the ids behind them
    parent = ET.SubElement(root, group)
    for attributes in sorted(items, key=key):
        ET.SubElement(parent, item, attributes)


def worker_state(state: str, has_open_lease: bool) -> str:
    """What a worker is doing, as reports and the ``workers`` query show it: retired, busy or idle
    (a revoked worker is retired for good: the report's schema keeps its three states)."""
    if state in ("retired", "revoked"):
        return "retired"
    return "busy" if has_open_lease else "idle"


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)

