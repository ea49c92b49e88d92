"""``marketctl worker run``'s sandbox options, run as a worker's owner runs them (no broker needed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def marketctl(*argv: str, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "MARKET_HOME": str(env.pop("home")), **env}
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", "bob", "worker", "run", *argv], env=environ,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_machine_that_cannot_confine_jobs_is_refused_in_one_line(tmp_path):
    # Given a machine without bubblewrap (a PATH where there is none)
    # When the owner starts a worker
    done = marketctl("--name", "w1", home=tmp_path, PATH=str(tmp_path))

    # Then it refuses, in one line that says what to install, before it connects to anything
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "marketctl: refusing to run strangers' jobs unconfined: bubblewrap is not installed (apt-get install "
        "bubblewrap) (or --unsafe-no-sandbox to run them as your own user)"]


def test_check_sandbox_prints_the_battery_and_every_attack_contained(tmp_path):
    # When the owner checks this machine's sandbox
    done = marketctl("--check-sandbox", home=tmp_path)

    # Then a table shows each attack contained and the next job run, and the command says so
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["attack", "contained", "next"]
    assert len(lines) == 14 and all("  yes  " in line and "  ok  " in line for line in lines[1:13])
    assert lines[-1].startswith("12 of 12 attacks contained in ")

