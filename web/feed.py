"""An Atom feed (RFC 4287) of a member's jobs' state changes, from the projections."""
from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET

from contracts.envelope import utc_now_iso

ATOM = "http://www.w3.org/2005/Atom"
#: newest changes the feed carries
FEED_ENTRIES = 50
OUTCOMES = {"checkpointed": "checkpointed", "finished": "finished", "errored": "raised an error",
            "expired": "expired (no checkpoint before the deadline)", "open": "running"}


def feed_signature(key: bytes, account: str) -> str:
    return hmac.new(key, f"feed:{account}".encode(), hashlib.sha256).hexdigest()[:32]


def feed_url(request, account: str) -> str:
    """The member's private feed address: it carries a signature instead of a session."""
    settings = request.app.state.settings
    return f"{settings.web_url}/feed/{account}/{feed_signature(request.app.state.feed_key, account)}.atom"


def job_changes(jobs: list[dict]) -> list[dict]:
    """Every change of the given jobs (details from the ``job`` query), newest first:
    submitted, each lease checked out and in, and how the job ended."""
    changes = []
    for job in jobs:
        name, job_id = job["name"], job["job_id"]
        changes.append({"id": f"{job_id}/submitted", "at": job["submitted_at"], "job_id": job_id,
                        "title": f"{name}: submitted"})
        for lease in job["leases"]:
            changes.append({"id": f"{job_id}/{lease['lease_id']}/out", "at": lease["checked_out"], "job_id": job_id,
                            "title": f"{name}: running on {lease['worker_id']} from checkpoint {lease['checkpoint']}"})
            if lease["checked_in"]:
                changes.append({"id": f"{job_id}/{lease['lease_id']}/in", "at": lease["checked_in"],
                                "job_id": job_id, "title": f"{name}: lease on {lease['worker_id']} "
                                                           f"{OUTCOMES.get(lease['outcome'], lease['outcome'])}"})
        if job["finished_at"]:
            changes.append({"id": f"{job_id}/{job['status']}", "at": job["finished_at"], "job_id": job_id,
                            "title": f"{name}: {job['status']}"})
    # at the same instant, the later change of a job (its end after its last lease) comes first
    order = sorted(range(len(changes)), key=lambda i: (changes[i]["at"], i), reverse=True)
    return [changes[i] for i in order[:FEED_ENTRIES]]


def atom_feed(account: str, self_url: str, site_url: str, changes: list[dict]) -> bytes:
    ET.register_namespace("", ATOM)

    def sub(parent, tag, text=None, **attributes):
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attributes)
        element.text = text
        return element

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", f"{site_url}/feed/{account}")
    sub(feed, "title", f"Jobs of {account} on the compute market")
    sub(feed, "updated", changes[0]["at"] if changes else utc_now_iso())
    sub(feed, "link", rel="self", href=self_url)
    sub(feed, "link", rel="alternate", href=f"{site_url}/jobs")
    author = sub(feed, "author")
    sub(author, "name", account)
    for change in changes:
        entry = sub(feed, "entry")
        sub(entry, "id", f"{site_url}/jobs/{change['id']}")
        sub(entry, "title", change["title"])
        sub(entry, "updated", change["at"])
        sub(entry, "link", rel="alternate", href=f"{site_url}/jobs/{change['job_id']}")
        sub(entry, "summary", change["title"])
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)
