"""Speed claims (issue 15), with the real market: a worker that runs its
probe fast and then delivers less is caught by a canary, disputed, probed
again at once, and its recorded speed drops."""
import argparse
import time

from cli.jobs import cmd_workers
from tests.e2e.conftest import unique
from tests.ledger.harness import wait_for

#: seconds the throttled worker waits before every lease after its first probe
THROTTLE = 2


def test_a_worker_slower_than_its_probe_is_disputed_probed_again_and_its_speed_drops(market, capsys):
    # Given the speed probe, with a small probe and a canary every 4-12 s per measured worker
    # (each runs THROTTLE s, so canaries do not pile up ahead of the paid work)
    market.start_agent("speedprobe", "agents.speedprobe.agent", MARKET_PROBE_SIZE="40", MARKET_CANARY_INTERVAL="8")
    time.sleep(1)
    # and a real worker that runs its first probe at full speed, then waits before every lease (test hook)
    worker = unique("slow")
    market.start_worker(worker, MARKET_TEST_THROTTLE_AFTER_PROBE=str(THROTTLE))
    # and paid work for it
    paid = market.submit("alice", "count", "9", {"steps": 2})

    # When the speed probe's canaries reach it among the paid leases
    def disputed():
        return [(row, p) for row, p in market.events("speed.disputed") if p["worker_id"] == worker] or None
    row, dispute = wait_for(disputed, 90, f"a speed dispute of {worker}")[0]

    # Then the dispute records the probed speed and the far lower delivered one, over the canary's lease
    assert dispute["delivered"] * 2 < dispute["probed"], dispute
    assert dispute["executed_ms"] >= THROTTLE * 1000 and dispute["lease_id"]
    canary = market.job(dispute["job_id"])
    assert canary.canary and canary.probe and canary.target_worker_id == worker
    # and a new probe (not a canary) of that worker is submitted after it, runs, and records the lower speed
    def reprobed():
        for _, p in market.events("job.completed"):
            job = market.job(p["job_id"])
            if job.probe and not job.canary and job.target_worker_id == worker and job.folded_seq > row.seq:
                return job
        return None
    wait_for(reprobed, 60, f"{worker} to be probed again")
    samples = [p["speed"] for _, p in market.events("speed.recorded") if p["worker_id"] == worker]

    def dropped():
        w = market.workers()[worker]
        return w if w.speed is not None and w.speed * 2 < dispute["probed"] else None
    measured = wait_for(dropped, 30, f"{worker}'s recorded speed to drop")
    assert samples[0] == dispute["probed"] and measured.disputes >= 1
    # and the paid work ran and was paid (canaries are not)
    market.wait_job(paid, timeout=60)
    payments = [p for _, p in market.events("payment.posted")]
    assert payments and all(p["job_id"] == paid for p in payments)

    # and its owner sees the discrepancy in marketctl workers
    capsys.readouterr()
    assert cmd_workers(market.settings, argparse.Namespace(account="bob", json=False, limit=100, after=None)) == 0
    shown = capsys.readouterr().out
    assert f"speed disputed {measured.disputes} time(s)" in shown and f"probed {dispute['probed']} kops" in shown
