"""Hostile jobs, submitted with ``marketctl submit`` to a real worker: each is
failed or contained, its owner reads why, the same worker then runs a normal
job, and nothing of the worker or of another job changed."""
from __future__ import annotations

import glob
import json
import subprocess
import sys
import uuid

import pytest

from sandbox.battery import OUTSIDE_ADDRESS
from tests.ledger.harness import wait_for
from tests.security.conftest import HOSTILE


@pytest.fixture(autouse=True)
def the_worker_survives(guarded):
    """After each attack: the same worker process and fork servers, no leftover process, a normal job runs."""
    worker_pid, servers = guarded.worker.pid, guarded.fork_servers()
    yield
    guarded.no_job_process_left()
    assert guarded.worker.poll() is None and guarded.worker.pid == worker_pid
    assert guarded.fork_servers() == servers
    guarded.normal_job_runs()


def failed_because(done, *reasons: str) -> str:
    """The owner's view of a failed job (``submit --wait`` prints the error): each reason is in it."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert " failed" in done.stderr, done.stderr
    for reason in reasons:
        assert reason in done.stderr, done.stderr
    return done.stderr


def test_a_job_cannot_read_the_markets_secrets_ssh_keys_or_shadow(guarded):
    # Given the ledger, the web secret, the Erlang cookie, the worker's ~/.ssh and /etc/shadow, all there
    paths = [str(path) for path in guarded.secrets()]

    # When a job reads them
    done = guarded.submit("read_files", {"paths": paths})

    # Then it failed, and its owner reads that none of them exists for it
    error = failed_because(done, "Contained: could not read")
    for path in paths:
        assert f"{path}: No such file or directory" in error


def _files_holding(secret: str) -> list[str]:
    found = []
    for path in glob.glob("/tmp/market-sandbox-*/*/secret.txt"):
        try:
            if open(path).read() == secret:
                found.append(path)
        except OSError:
            pass
    return found


class Holder:
    """A job of alice's that keeps a secret in its scratch directory for a few seconds, submitted with marketctl."""

    def __init__(self, guarded):
        secret = f"s3cret-{uuid.uuid4().hex}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--as", "alice", "submit", f"{HOSTILE}:hold_secret", "--name",
             "holder", "--price", "1", "--args", json.dumps({"secret": secret, "seconds": 4}),
             "--max-attempts", "1", "--wait"], env=guarded.market.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.secret = wait_for(lambda: _files_holding(secret), 30, "the holder's secret")
        self.pids = guarded.job_processes()

    def ran_untouched(self) -> None:
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"held": True}


def test_a_job_cannot_read_another_running_jobs_scratch_directory(guarded):
    # Given a job that keeps a secret in its scratch directory while it runs
    holder = Holder(guarded)

    # When another job reads it, by its path on the host and by the sandbox's view of scratch directories
    done = guarded.submit("read_files", {"paths": holder.secret + ["/run/market-scratch", "/tmp/secret.txt"]})

    # Then it read nothing, and the holder ran to its end untouched
    failed_because(done, "Contained: could not read", f"{holder.secret[0]}: No such file or directory",
                   "/run/market-scratch: empty")
    holder.ran_untouched()


def test_a_job_cannot_connect_to_the_broker_the_portal_or_outside(guarded):
    # Given the broker and the portal listening on this machine's loopback
    portal_port = int(guarded.portal.url.rsplit(":", 1)[1])
    addresses = [["127.0.0.1", guarded.settings.amqp_port], ["127.0.0.1", portal_port],
                 ["127.0.0.1", guarded.settings.management_port]]

    # When a job connects to them, and to an address outside
    local = guarded.submit("connect", {"addresses": addresses})
    outside = guarded.submit("connect", {"addresses": [list(OUTSIDE_ADDRESS)]})

    # Then nothing was reached: its network is a loopback of its own
    failed_because(local, *(f"127.0.0.1:{port}: Connection refused" for _, port in addresses))
    failed_because(outside, f"{OUTSIDE_ADDRESS[0]}:{OUTSIDE_ADDRESS[1]}: Network is unreachable")


def test_a_job_cannot_signal_or_ptrace_the_worker_its_fork_servers_or_another_job(guarded):
    # Given every process of the worker: itself, bwrap, the fork servers, and another job running
    holder = Holder(guarded)
    pids = sorted(guarded.tree())
    assert guarded.worker.pid in pids and guarded.fork_servers() <= set(pids) and holder.pids <= set(pids)
    assert holder.pids

    # When a job signals and ptrace-attaches each of them
    done = guarded.submit("signal_processes", {"pids": pids})

    # Then none exists for it: it is alone in a pid namespace of its own; and the other job ran on untouched
    failed_because(done, *(f"kill {pid}: No such process" for pid in pids),
                   *(f"ptrace {pid}: No such process" for pid in pids))
    holder.ran_untouched()


def test_a_fork_bomb_is_stopped_by_the_process_limit_and_leaves_nothing(guarded):
    # When a job forks 300 sleeping processes (the sandbox allows 64 in all)
    done = guarded.submit("fork_bomb", {"processes": 300, "sleep": 60})

    # Then the fork was refused, and (the_worker_survives) none of them outlived the lease
    failed_because(done, "fork refused after", "Resource temporarily unavailable")


@pytest.mark.parametrize("entry, args, reason", [
    ("allocate", {"gib": 8}, "allocating 8 GiB: MemoryError"),
    ("write_big_file", {"mib": 300}, "writing stopped after 256 MiB: File too large"),
], ids=["8 GiB", "a file past the limit"])
def test_memory_and_file_limits_hold(guarded, entry, args, reason):
    failed_because(guarded.submit(entry, args), reason)


def test_a_state_of_500_mb_is_refused_with_a_clear_reason(guarded):
    done = guarded.submit("huge_state", {"mib": 500})
    failed_because(done, "cannot be serialized: MemoryError")


def test_a_gigabyte_of_stdout_is_cut_to_the_outputs_limit(guarded):
    # When a job prints 1 GiB
    done = guarded.submit("flood_stdout", {"mib": 1024})

    # Then it completed, and what the ledger kept of its output is the head and the tail
    assert done.returncode == 0, done.stderr
    job_id = guarded.last_job_id()
    outputs = [payload["output"] for _, payload in guarded.market.events("job.finished")
               if payload["job_id"] == job_id]
    assert len(outputs) == 1 and len(outputs[0]) <= 64 * 1024 and "bytes of output dropped" in outputs[0]


def test_a_loop_that_never_yields_ends_with_its_lease_and_the_worker_lives(guarded):
    # When a job spins without ever reaching a safe point
    done = guarded.submit("spin", {})

    # Then its lease ended (the worker killed it at the deadline, the ledger expired it) and it is out of
    # the market with a reason its owner reads
    assert done.returncode == 1, done.stderr
    assert any(word in done.stderr for word in ("quarantined", "failed")), done.stderr
    job = guarded.market.job(guarded.last_job_id())
    assert job.status in ("quarantined", "failed")


def test_a_daemonized_grandchild_is_gone_when_its_lease_ends(guarded):
    # When a job double-forks a detached daemon and returns
    done = guarded.submit("leave_daemon", {"port": 47914})
    assert done.returncode == 0, done.stderr

    # Then (the_worker_survives) no process of that lease is left on this machine
    guarded.no_job_process_left()
