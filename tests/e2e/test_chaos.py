"""The chaos run's short form (``bench/chaos.py --short``): a market on a
three-node broker cluster and PostgreSQL, six workers (one with its clock
300 s ahead), checkpointing jobs with known answers, while the ledger is
killed with -9, the node leading ``ledger.inbox`` is killed with -9 and
brought back, PostgreSQL is restarted like a crash, and 100 poison messages
are published by a member with pika. Every count must come out right.

Ports and node names: the MARKET_TEST_CLUSTER_* variables (tests/cluster.py),
as the cluster tests take them; it takes ~3-4 minutes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import cluster_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.broker
@pytest.mark.cluster
@pytest.mark.postgres_live
@pytest.mark.slow
def test_the_short_chaos_run_loses_duplicates_and_misstates_nothing(tmp_path):
    # Given the bench's environment: the test cluster's ports and names, nothing else of MARKET_*
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update(cluster_environment(os.environ))
    out = tmp_path / "chaos.json"

    # When the short chaos run runs
    done = subprocess.run([sys.executable, "bench/chaos.py", "--short", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)

    # Then it says nothing is wrong, and its report's counts say so one by one
    report = json.loads(out.read_text())
    assert done.returncode == 0, (report.get("problems"), done.stderr[-3000:])
    jobs = report["jobs"]
    assert jobs["submitted"] == report["jobs_asked"] and not report["refused"]
    assert (jobs["lost"], jobs["duplicated"], jobs["wrong"]) == (0, 0, 0), jobs
    assert jobs["completed"] + jobs["failed"] == jobs["submitted"]
    assert jobs["completed"] > 0
    # the jobs checkpointed (short leases), and every checkpoint and completion was paid once
    assert report["events_by_type"]["checkpoint.committed"] > 0
    payments = report["payments"]
    assert payments["owed"] == payments["posted"] > jobs["completed"]
    assert not (payments["duplicated"] or payments["missing"] or payments["unexpected"])
    assert report["balances_sum"] == 0
    assert all(report["checks"].values()), report["check_output"]
    assert report["poison"] == {"published": 100, "dead_lettered": 100}
    # every fault was done, and the market made progress after each
    faults = {f["fault"] for f in report["faults"]}
    assert faults == {"ledger kill -9", "inbox leader node kill -9", "killed node back", "postgresql restart",
                      "poison x100"}
    assert not [f for f in report["faults"] if f["error"] or f["recovered_after_s"] is None], report["faults"]
    assert report["problems"] == []
