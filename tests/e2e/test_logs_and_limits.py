"""Issue 17 with real workers: `logs --follow` streaming a running job, artifacts
downloaded, an exit code shown, and both time limits (the money too)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from cli.jobs import build_submission
from contracts.envelope import parse_time, utc_now_iso
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
    # and `submit --wait` says why it failed
    waited = marketctl(market, "alice", "submit", f"{CHATTY}:exit_with", "--name", "exit", "--price", "3.6",
                       "--args", '{"code": 4}', "--max-attempts", "1", "--wait", timeout=120)
    assert waited.returncode == 1 and " failed: errored 1 times (the limit is 1)" in waited.stderr, waited.stderr
    assert "SystemExit: 4" in waited.stderr


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


def chatty_job_on_a_worker(market, owner: str, worker_prefix: str, steps: int, lease_seconds: int):
    """(worker id, job id): a new worker, and ``owner``'s job that prints a line every 0.25 s."""
    worker = unique(worker_prefix)
    market.start_measured_worker(worker, lease_seconds=lease_seconds)
    payload = build_submission(market.settings, f"{CHATTY}:talk", "talk", "3.6",
                               json.dumps({"steps": steps, "delay": 0.25}), 3)
    assert market.send(owner, "job.submitted", payload)["verdicts"][0]["type"] == "job.accepted"
    return worker, payload["job_id"]


def test_another_member_cannot_read_a_running_jobs_live_output_nor_forge_it(market, tmp_path):
    """The attack, with an independent client (pika) on alice's own keys, against bob's running job."""
    import pika

    from tests.ledger.harness import CODEC
    from tests.security.test_broker_identity import REFUSED, Keys, pika_connection, publish, refused

    # Given bob's job streaming on his worker, and alice holding a member key and a worker key of her own
    reply = market.send("operator", "account.deposited", {"account": "bob", "amount": 1_000_000_000})
    assert reply["status"] == "recorded", reply
    worker, job_id = chatty_job_on_a_worker(market, "bob", "w-bob", steps=60, lease_seconds=30)
    wait_for(lambda: market.events("lease.output"), 60, "bob's job to stream")
    lease_id = market.job(job_id).lease_id
    keys = Keys(market, tmp_path)
    # When alice's member key tries to reach the chunks on the broker
    connection = pika_connection(keys.member)
    try:
        from broker_setup.topology import EVENTS_EXCHANGE, LEDGER_INBOX
        codes = {
            "read ledger.inbox, where the chunks go": refused(connection, lambda ch: ch.basic_get(LEDGER_INBOX)),
            "declare a queue to bind to lease.output": refused(
                connection, lambda ch: ch.queue_declare("", exclusive=True)),
            "bind a queue to lease.output": refused(
                connection, lambda ch: ch.queue_bind(LEDGER_INBOX, EVENTS_EXCHANGE, "lease.output")),
            "publish a chunk as a member": refused(connection, publish("lease.output", "alice")),
        }
    finally:
        connection.close()
    # Then the broker refuses each
    assert all(code in REFUSED for code in codes.values()), codes
    # And asking the ledger with her own key gets what a job that does not exist gets
    asked = subprocess.run([sys.executable, "-m", "cli.main", "--credentials", str(keys.member_file), "logs",
                            job_id], env={**market.env, "MARKET_AMQP_URL": ""}, capture_output=True, text=True,
                           timeout=60)
    assert asked.returncode != 0 and asked.stderr.strip() == f"marketctl: no job {job_id} of account alice"
    # And a chunk her worker key forges for bob's lease (the broker lets a worker key say lease.output)
    # is not recorded (ledger.live_output) and shown to nobody
    streamed = len(market.events("lease.output"))
    event_id, body = CODEC.encode("lease.output", {"lease_id": lease_id, "job_id": job_id, "offset": 0,
                                                   "text": "FORGED by alice\n"})
    forger = pika_connection(keys.worker)
    try:
        channel = forger.channel()
        channel.confirm_delivery()
        channel.basic_publish(EVENTS_EXCHANGE, "lease.output", body,
                              pika.BasicProperties(user_id=f"worker:{keys.worker_id}", message_id=event_id,
                                                   content_type="application/json"), mandatory=True)
    finally:
        forger.close()
    # (bob's chunks share ledger.inbox with it: two more of his mean the forgery was taken and dropped)
    wait_for(lambda: len(market.events("lease.output")) >= streamed + 2, 30, "bob's next chunks")
    assert all(row.event_id != event_id for row, _ in market.events("lease.output"))
    shown = marketctl(market, "bob", "logs", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert answer["live"] is not None and "line 0 of 60" in answer["live"]["text"]
    assert "FORGED" not in shown.stdout


def test_a_worker_key_flooding_live_output_cannot_fill_the_log(market):
    """The attack, with pika on the worker's own key, against the ledger's log."""
    import pika

    from broker_setup.topology import EVENTS_EXCHANGE
    from cli.credentials import Credentials
    from ledger.live_output import BURST_CHUNKS
    from tests.ledger.harness import CODEC
    from tests.security.test_broker_identity import pika_connection

    # Given bob's worker running a job that prints a line every 0.25 s
    worker, job_id = chatty_job_on_a_worker(market, "alice", "w-flood", steps=40, lease_seconds=60)
    wait_for(lambda: market.job(job_id).status == "leased", 60, "the lease")
    lease = market.job(job_id).lease_id
    # When that worker's own key publishes 1,000 one-character chunks for its lease at once
    flooder = pika_connection(Credentials.load(market.worker_key(worker)))
    try:
        channel = flooder.channel()
        channel.confirm_delivery()
        for offset in range(1000):
            _, body = CODEC.encode("lease.output", {"lease_id": lease, "job_id": job_id,
                                                    "offset": 20_000 + offset, "text": "F"})
            channel.basic_publish(EVENTS_EXCHANGE, "lease.output", body,
                                  pika.BasicProperties(user_id=f"worker:{worker}", content_type="application/json"))
    finally:
        flooder.close()
    market.wait_job(job_id, timeout=90)
    # Then the log holds a lease's bounded few chunks, not a thousand, and the job is unharmed
    chunks = [p for row, p in market.events("lease.output") if p["lease_id"] == lease]
    age = (parse_time(market.leases(job_id)[0].ended_at or utc_now_iso())
           - parse_time(market.leases(job_id)[0].granted_at)).total_seconds()
    assert len(chunks) <= BURST_CHUNKS + age + 1, (len(chunks), age)
    assert sum(1 for p in chunks if p["text"] == "F") <= BURST_CHUNKS + age  # of the 1,000 sent
    assert market.result(job_id) is not None


def test_the_portal_lists_a_jobs_artifacts_and_gives_them_to_its_owner_only(market, tmp_path):
    import io
    import tarfile

    from tests.web.conftest import Portal, start_portal

    # Given the portal, a worker, and two members who signed up there (each welcomed with credits)
    worker = unique("w-portal")
    market.start_measured_worker(worker)
    _, url = start_portal(market, tmp_path / "portal")
    portal = Portal(market, url, tmp_path / "portal" / "mail")
    owner, other = portal.member("own"), portal.member("oth")
    # When the owner uploads a job that leaves files in outputs/
    page = owner.http.post("/submit", data={"csrf": owner.csrf("/submit"), "entry": "talk", "name": "talk",
                                            "price": "3.6", "args": '{"steps": 2, "delay": 0}',
                                            "max_attempts": "1"},
                           files={"module": ("chatty.py", CHATTY.read_bytes(), "text/x-python")})
    assert page.status_code == 200 and page.url.path.startswith("/jobs/job-"), page.text
    job_id = page.url.path.rsplit("/", 1)[1]
    assert owner.wait_terminal(job_id)["status"] == "completed"
    # Then its page lists them, and the tar downloads with exactly those files
    page = owner.http.get(f"/jobs/{job_id}")
    assert "<code>answer.txt</code> (3 bytes)" in page.text and "<code>sub/table.bin</code> (256 bytes)" in page.text
    download = owner.http.get(f"/jobs/{job_id}/artifacts.tar")
    assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == ["answer.txt", "sub/table.bin"]
        assert tar.extractfile("answer.txt").read() == b"42\n"
    # And another member gets a 404, as for a job that does not exist
    assert other.http.get(f"/jobs/{job_id}/artifacts.tar").status_code == 404
    assert other.http.get("/jobs/job-nope/artifacts.tar").status_code == 404
