"""Issue 17 with real workers: `logs --follow` streaming a running job, artifacts
downloaded, an exit code shown, and both time limits (the money too)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from cli.jobs import build_submission
from tests.e2e.conftest import JOBS, unique
from tests.e2e.test_money import balances
from tests.ledger.harness import wait_for

CHATTY = JOBS / "chatty.py"


def marketctl(market, account: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=market.env,
                          capture_output=True, text=True, timeout=timeout)


def submit(market, entry: str, args: dict, max_attempts: int = 3) -> str:
    payload = build_submission(market.settings, f"{CHATTY}:{entry}", entry, "3.6", json.dumps(args), max_attempts)
    reply = market.send("alice", "job.submitted", payload)
    assert [v["type"] for v in reply["verdicts"]] == ["job.accepted", "job.ready"], reply
    return payload["job_id"]


def test_logs_follow_streams_a_running_job_across_leases_and_its_artifacts_come_back(market, tmp_path):
    # Given a worker with 5 s leases, and alice's job that prints a line (and one on stderr)
    # every 0.25 s for 40 steps: about 10 s, so over two leases at least
    worker = unique("w-logs")
    market.start_measured_worker(worker, lease_seconds=5)
    job_id = submit(market, "talk", {"steps": 40, "delay": 0.25,
                                      "steal": str(market.worker_key(worker))})
    # When alice follows its logs
    follow = subprocess.Popen([sys.executable, "-m", "cli.main", "--as", "alice", "logs", job_id, "--follow"],
                              env=market.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Then lines arrive while the job is still running
        # (the follower may start after a first lease ended: that one is printed whole)
        head = [follow.stdout.readline()]
        while not (any(": running ==" in line for line in head) and head[-1].startswith("line ")):
            assert head[-1], follow.stderr.read()
            head.append(follow.stdout.readline())
        assert market.job(job_id).status != "completed"
        # (read through the same buffer as readline: communicate() would skip what it holds)
        rest = follow.stdout.read()
        assert follow.wait(timeout=120) == 0, follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
    shown = "".join(head) + rest
    # every line, in order, across the leases, and the job's end
    assert all(f"line {i} of 40" in shown for i in range(40)), shown
    positions = [shown.index(f"line {i} of 40") for i in range(40)]
    assert positions == sorted(positions), shown
    assert "note 39 on stderr" in shown
    assert len(market.leases(job_id)) >= 2
    assert 1 <= shown.count(": running ==") <= len(market.leases(job_id)), shown
    assert f"== job {job_id} completed ==" in shown
    # And another member cannot read them: the same answer as for a job that does not exist
    for other in (marketctl(market, "bob", "logs", job_id), marketctl(market, "bob", "logs", "job-nope")):
        assert other.returncode != 0 and other.stderr.strip() == f"marketctl: no job {other.args[-1]} of account bob"
    # And the files it left in outputs/ come back as artifacts; its link to the worker's
    # credentials and its FIFO do not
    folder = tmp_path / "artifacts"
    done = marketctl(market, "alice", "result", job_id, "--artifacts", str(folder))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"lines": 40}
    assert (folder / "answer.txt").read_text() == "42\n"
    assert (folder / "sub" / "table.bin").read_bytes() == bytes(range(256))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "answer.txt", "sub", "sub/table.bin"]
    # and the last lease's kept output says what was left out
    logs = marketctl(market, "alice", "logs", job_id)
    assert "stolen (not a regular file)" in logs.stdout and "pipe (not a regular file)" in logs.stdout
    # And bob cannot have them
    stolen = marketctl(market, "bob", "result", job_id, "--artifacts", str(tmp_path / "bob"))
    assert stolen.returncode != 0 and not (tmp_path / "bob").exists()


def test_a_failed_leases_exit_code_is_shown_with_its_traceback(market):
    worker = unique("w-exit")
    market.start_measured_worker(worker)
    job_id = submit(market, "exit_with", {"code": 3}, max_attempts=1)
    market.wait_job(job_id, ("failed",))
    logs = marketctl(market, "alice", "logs", job_id)
    assert logs.returncode == 1
    assert "errored, exit code 3" in logs.stdout
    assert "about to exit" in logs.stdout and "SystemExit: 3" in logs.stdout
    assert f"== job {job_id} failed: errored 1 times (the limit is 1) ==" in logs.stdout
    result = marketctl(market, "alice", "result", job_id)
    assert result.returncode != 0 and "errored 1 times" in result.stderr and "marketctl logs" in result.stderr


def paid_by_alice(market, job_id: str) -> int:
    return -sum(posting["amount"] for _, payment in market.events("payment.posted") if payment["job_id"] == job_id
                for posting in payment["postings"] if posting["role"] == "payer")


def test_max_runtime_fails_the_job_and_charges_only_the_accepted_work(market):
    # Given a worker with 60 s leases and alice's endless job submitted with --max-runtime 3
    worker = unique("w-runtime")
    market.start_measured_worker(worker, lease_seconds=60)
    before = balances(market)["alice"]
    done = marketctl(market, "alice", "submit", f"{CHATTY}:spin", "--name", "spin", "--price", "3.6",
                     "--max-runtime", "3", "--args", "{}")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    # Then it fails with that reason, after leases no longer than the runtime left
    job = market.wait_job(job_id, ("failed",), timeout=90)
    leases = market.leases(job_id)
    assert leases[0].lease_seconds == 3 and all(lease.lease_seconds <= 3 for lease in leases)
    assert job.executed_ms <= 3000
    logs = marketctl(market, "alice", "logs", job_id)
    assert "failed: max-runtime exceeded (3 s;" in logs.stdout, logs.stdout
    # And alice paid exactly the accepted leases' time, at 3.6 credits/h = 1 micro-credit per ms
    assert paid_by_alice(market, job_id) == sum(lease.executed_ms for lease in leases) == job.executed_ms
    assert balances(market)["alice"] == before - job.executed_ms
    assert sum(balances(market).values()) == 0


def test_a_deadline_fails_the_job_and_charges_only_the_accepted_work(market):
    worker = unique("w-deadline")
    market.start_measured_worker(worker, lease_seconds=60)
    before = balances(market)["alice"]
    # far enough for a loaded machine to build and submit the job first
    deadline = datetime.now(timezone.utc) + timedelta(seconds=20)
    done = marketctl(market, "alice", "submit", f"{CHATTY}:spin", "--name", "spin", "--price", "3.6",
                     "--deadline", deadline.isoformat(), "--args", "{}")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    job = market.wait_job(job_id, ("failed",), timeout=90)
    leases = market.leases(job_id)
    assert leases and all(lease.deadline <= job.deadline_at for lease in leases)
    logs = marketctl(market, "alice", "logs", job_id)
    assert "failed: deadline passed" in logs.stdout, logs.stdout
    assert paid_by_alice(market, job_id) == job.executed_ms
    assert balances(market)["alice"] == before - job.executed_ms
    # nothing runs past the deadline: every lease ended by it
    assert all(lease.ended_at is not None for lease in leases)
