"""marketctl worker install-service and earnings' text, and worker run's new options' errors (no broker)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from cli.credentials import Credentials
from cli.main import main
from cli.worker_owner import render_earnings, service_unit


@pytest.fixture
def worker_credentials(tmp_path):
    return Credentials(amqp_url="amqp://worker%3Aw1:secret@127.0.0.1:5940/", account="bob",
                       worker_id="w1", name="w1").save(tmp_path / "my worker" / "credentials")


def test_install_service_prints_a_unit_that_runs_this_worker_with_the_options_given(worker_credentials, capsys):
    # When the owner asks for the unit of an --idle-only worker capped at 50 %
    code = main(["--credentials", str(worker_credentials), "worker", "install-service", "--print", "--",
                 "--idle-only", "--cpu-limit", "50"])
    unit = capsys.readouterr().out
    # Then it runs `worker run` with those options on this worker's credentials, from log-in on
    assert code == 0
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f'--credentials "{worker_credentials}" worker run --idle-only --cpu-limit 50' in exec_start
    assert "WantedBy=default.target" in unit and "Restart=on-failure" in unit
    assert "secret" not in unit  # the key stays in its 0600 file


def test_install_service_writes_the_unit_where_systemd_looks(worker_credentials, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert main(["--credentials", str(worker_credentials), "worker", "install-service"]) == 0
    unit = tmp_path / "config" / "systemd" / "user" / "market-worker-w1.service"
    assert unit.exists() and "worker run" in unit.read_text()
    assert "systemctl --user enable --now market-worker-w1.service" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_unit_is_one_systemd_accepts(tmp_path):
    unit = tmp_path / "market-worker-w1.service"
    # a path with a space and a percent sign: quoted and escaped as systemd reads them
    unit.write_text(service_unit("w1", ["/bin/true"], tmp_path / "my 100% creds", ["--idle-only"]))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and "ExecStart" not in done.stderr, done.stderr


@pytest.mark.parametrize("argv, error", [
    (["worker", "install-service", "--print", "--", "--cpu-limt", "5"], "not options of `marketctl worker run`"),
    (["worker", "run", "--cpu-limit", "0"], "--cpu-limit is a percentage of one core, 1 to 100"),
    (["worker", "run", "--cpu-limit", "150"], "--cpu-limit is a percentage of one core, 1 to 100"),
    (["worker", "run", "--nice", "25"], "--nice must be 0"),
    (["worker", "run", "--idle-only", "--idle-load", "0"], "--idle-load above 0"),
])
def test_bad_options_get_one_clear_line(argv, error, worker_credentials, capsys):
    code = main(["--credentials", str(worker_credentials), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) >= 1 and error in err[-1], err


def test_install_service_needs_a_workers_credentials(tmp_path, capsys):
    member = Credentials(amqp_url="amqp://bob:secret@127.0.0.1:5940/", account="bob").save(tmp_path / "bob")
    assert main(["--credentials", str(member), "worker", "install-service", "--print"]) == 2
    assert "needs a worker's credentials" in capsys.readouterr().err


def test_earnings_text_shows_the_sums_and_a_months_payments():
    answer = {"workers": [{"worker_id": "w1", "speed": 1500}, {"worker_id": "w2", "speed": None}],
              "today": 1_500_000, "month": 2_000_000, "total": 9_000_001, "month_asked": "2026-12",
              "month_amount": 2_000_000,
              "payments": [{"at": "2026-12-04T10:00:00.000000Z", "worker_id": "w1", "job_id": "job-1",
                            "lease_id": "l1", "executed_ms": 12_345, "price": 1, "amount": 2_000_000}]}
    text = render_earnings(answer)
    assert "w1" in text and "1500" in text and "w2" in text
    assert "today" in text and "1.500000" in text and "9.000001" in text
    assert "2026-12: 2.000000 credits, 1 payment(s)" in text
    assert "2026-12-04T10:00:00" in text and "12.345" in text
