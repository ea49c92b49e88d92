"""marketctl logs, result --artifacts: what a job printed, and the files it left (issue 17).

``logs JOB`` prints each lease's kept output in grant order (only paid
leases': ledger.log_queries), an errored lease's exit status and traceback,
and a failed job's reason. ``--follow`` then streams the running lease's
output as its worker sends it, lease after lease, until the job ends.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from cli.requests import requester_as
from cli.stored_results import save_result
from contracts.blobs import CHUNK_BYTES
from common.errors import MarketError
from ledger.money import format_seconds

#: seconds between two questions of a follower
FOLLOW_INTERVAL = 1.0
#: a job in one of these states has no more output to come (ledger.fold.TERMINAL_JOB_STATES)
ENDED = ("completed", "failed", "cancelled", "quarantined")


class LogsError(MarketError):
    exit_code = 1


def register(commands, command) -> None:
    """Add `marketctl logs` to the parser."""
    sub = command("logs", cmd_logs, "what your job printed, lease by lease (stdout and stderr, bounded; an errored "
                  "lease's exit code or signal and traceback); only paid leases' output is kept")
    sub.add_argument("job_id", metavar="JOB")
    sub.add_argument("--lease", metavar="L", help="this lease only")
    sub.add_argument("--follow", "-f", action="store_true",
                     help="then stream the running lease's output as it arrives, until the job ends")
    sub.add_argument("--json", action="store_true", help="print the answer as JSON (not with --follow)")


def add_artifacts_option(sub) -> None:
    sub.add_argument("--artifacts", metavar="DIR",
                     help="write the files the job left in outputs/ into DIR (made if missing; no file is "
                          "overwritten)")


def cmd_logs(settings, args) -> int:
    return asyncio.run(_logs(settings, args))


async def _logs(settings, args) -> int:
    question = {"job_id": args.job_id}
    if args.lease:
        question["lease_id"] = args.lease
    async with requester_as(settings, args.account) as requester:
        async def ask(after: int) -> dict:
            return await requester.ask("job_logs", {**question, "after": after}, user_id=args.account,
                                       timeout=settings.reply_timeout)

        answer = await ask(0)
        if args.json:
            print(json.dumps(answer, indent=2))
            return 0
        follower = Follower()
        follower.show(answer)
        while args.follow and answer["status"] not in ENDED:
            await asyncio.sleep(FOLLOW_INTERVAL)
            answer = await ask(follower.after)
            follower.show(answer)
    # a job that ended without a result says so in the exit code too
    return 1 if answer["status"] in ("failed", "cancelled", "quarantined") else 0


class Follower:
    """Prints each answer's news once: leases that ended, the live lease's new text, the end."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.printed: set[str] = set()
        self.streaming: str | None = None
        #: the text streamed of the lease being followed
        self.streamed = ""
        self.after = 0
        self.ended = False
        self.capped: set[str] = set()

    def show(self, answer: dict) -> None:
        for lease in answer["leases"]:
            if lease["outcome"] == "open" or lease["lease_id"] in self.printed:
                continue
            self.printed.add(lease["lease_id"])
            if lease["lease_id"] == self.streaming:
                # the worker streams every second: what came after its last chunk is in the kept output
                self._write(_rest(lease, self.streamed))
                self._write(_lease_footer(lease))
                self.streaming = None
            else:
                self._write(_lease_header(lease) + _lease_body(lease))
        live = answer.get("live")
        if live is not None:
            if live["lease_id"] != self.streaming:
                self.streaming, self.streamed = live["lease_id"], ""
                self._write(f"== lease {live['lease_id']} on worker {live['worker_id']}: running ==\n")
            self._write(live["text"])
            self.streamed += live["text"]
            self.after = live["next"]
            if live["capped"] and live["lease_id"] not in self.capped:
                self.capped.add(live["lease_id"])
                self._write(f"\n[live output stops here (its bound): `marketctl logs {answer['job_id']} --lease "
                            f"{live['lease_id']}` shows the lease's kept output once it ends]\n")
        if answer["status"] in ENDED and not self.ended:
            self.ended = True
            reason = f": {answer['reason']}" if answer.get("reason") else ""
            self._write(f"== job {answer['job_id']} {answer['status']}{reason} ==\n")

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()


def _lease_header(lease: dict) -> str:
    how = lease["outcome"]
    if lease.get("exit"):
        how += f", {lease['exit']}"
    return (f"== lease {lease['lease_id']} on worker {lease['worker_id']}: {how}, "
            f"{format_seconds(lease['executed_ms'])} s paid ==\n")


def _lease_body(lease: dict) -> str:
    if not lease["shown"]:
        return f"[no output kept: the lease ended {lease['outcome']}, unpaid]\n"
    text = lease["output"]
    if text and not text.endswith("\n"):
        text += "\n"
    if lease.get("error"):
        text += f"-- {lease.get('exit') or 'error'} --\n{lease['error'].rstrip()}\n"
    return text


def _rest(lease: dict, streamed: str) -> str:
    """The part of an ended lease's kept output that its stream did not show
    (nothing when the kept output is not the stream's continuation: cut, or unpaid)."""
    kept = lease["output"] if lease["shown"] else ""
    return kept[len(streamed):] if kept.startswith(streamed) else ""


def _lease_footer(lease: dict) -> str:
    """A lease whose output was streamed has ended: how, and what is kept of it."""
    if not lease["shown"]:
        return f"\n== lease {lease['lease_id']} ended {lease['outcome']}, unpaid: its output is not kept ==\n"
    tail = ""
    if lease.get("error"):
        tail = f"-- {lease.get('exit') or 'error'} --\n{lease['error'].rstrip()}\n"
    return (f"\n== lease {lease['lease_id']} ended: {lease['outcome']}"
            f"{', ' + lease['exit'] if lease.get('exit') else ''}, {format_seconds(lease['executed_ms'])} s paid "
            f"(its kept output: marketctl logs JOB --lease {lease['lease_id']}) ==\n{tail}")


# ---- artifacts ----------------------------------------------------------------------

async def fetch_artifacts(settings, account: str, job_id: str) -> dict:
    """The ``artifacts`` answer: the tar's bytes (``data``, None for none), or issue 17's read
    grant for a tar in the blob store (``grant``)."""
    async with requester_as(settings, account) as requester:
        return await requester.ask("artifacts", {"job_id": job_id}, user_id=account, timeout=settings.reply_timeout)


def write_artifacts(tar, folder: str) -> list[tuple[str, int]]:
    """Write the artifacts tar's files (``tar``: its bytes, or the path of a file holding it)
    under ``folder``: regular files only, each name checked to stay inside it, none
    overwritten, each streamed. Returns (path, size)."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    opened = tarfile.open(fileobj=io.BytesIO(tar), mode="r") if isinstance(tar, bytes) else tarfile.open(tar, "r")
    with opened as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not name.parts:
                raise LogsError(f"the artifacts hold a file named {member.name!r}, outside the folder: not written")
            path = target.joinpath(*name.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # O_EXCL|O_NOFOLLOW: never overwrite, never write through a link already there
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError as e:
                raise LogsError(f"{path} exists already: not overwritten (write into an empty folder)") from e
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out, CHUNK_BYTES)
            written.append((str(path), member.size))
    return written


def save_artifacts(settings, account: str, job_id: str, folder: str) -> int:
    answer = asyncio.run(fetch_artifacts(settings, account, job_id))
    if answer.get("data") is None and "grant" not in answer:
        print(f"job {job_id} left no artifacts (nothing in outputs/)", file=sys.stderr)
        return 0
    if "grant" in answer:
        # issue 17: a large tar is in the blob store: fetched (checked) to a temporary file, then unpacked
        with tempfile.TemporaryDirectory(prefix="market-artifacts-") as scratch:
            tar = os.path.join(scratch, "artifacts.tar")
            save_result(answer, tar)
            written = write_artifacts(tar, folder)
    else:
        written = write_artifacts(base64.b64decode(answer["data"]), folder)
    for path, size in written:
        print(f"{path}\t{size} bytes", file=sys.stderr)
    print(f"wrote {len(written)} artifact file(s) to {folder}", file=sys.stderr)
    return 0
