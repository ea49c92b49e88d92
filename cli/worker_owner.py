"""marketctl worker earnings, worker install-service: for the owner of a worker left running."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

from cli.jobs import UsageError
from cli.money import format_credits
from contracts.envelope import utc_now_iso

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


# ---- earnings -------------------------------------------------------------------


def cmd_worker_earnings(settings, args) -> int:
    from cli.jobs import ask

    question = {}
    if args.month is not None:
        month = utc_now_iso()[:7] if args.month == "current" else args.month
        if not MONTH.match(month):
            raise UsageError(f"--month takes YYYY-MM, not {args.month!r}")
        question["month"] = month
    if args.worker:
        question["worker_id"] = args.worker
    answer = asyncio.run(ask(settings, args.account, "earnings", question))
    print(json.dumps(answer, indent=2) if args.json else render_earnings(answer))
    return 0


def render_earnings(answer: dict) -> str:
    """The earnings answer as text (pure)."""
    lines = [f"{'worker':<24} {'speed':>8}"]
    lines += [f"{w['worker_id']:<24} {w['speed'] if w['speed'] is not None else '-':>8}" for w in answer["workers"]]
    lines += ["", f"today       {format_credits(answer['today']):>16} credits",
              f"this month  {format_credits(answer['month']):>16} credits",
              f"in total    {format_credits(answer['total']):>16} credits"]
    if answer.get("month_asked"):
        lines += ["", f"{answer['month_asked']}: {format_credits(answer['month_amount'])} credits, "
                      f"{len(answer['payments'])} payment(s)",
                  f"{'paid at (UTC)':<20} {'worker':<20} {'job':<18} {'seconds':>9} {'credits':>14}"]
        lines += [f"{p['at'][:19]:<20} {p['worker_id']:<20} {p['job_id']:<18} "
                  f"{p['executed_ms'] / 1000:>9.3f} {format_credits(p['amount']):>14}" for p in answer["payments"]]
    return "\n".join(lines)


# ---- install-service -----------------------------------------------------------------


def cmd_install_service(settings, args) -> int:
    credentials = getattr(args, "credentials_found", None)
    if credentials is None or credentials.worker_id is None:
        raise UsageError("install-service needs a worker's credentials: --credentials FILE "
                         "(from `marketctl worker register`)")
    path = credentials_path(args)
    run_options = [a for a in args.run_options if a != "--"]
    _check_run_options(run_options)
    unit = service_unit(credentials.worker_id, marketctl_command(), path, run_options)
    name = unit_name(credentials.worker_id)
    if args.print:
        sys.stdout.write(unit)
        return 0
    target = user_units() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit)
    print(f"wrote {target}\nto start it now and at every log-in:\n"
          f"  systemctl --user daemon-reload && systemctl --user enable --now {name}\n"
          f"its log: journalctl --user -u {name} -f")
    return 0


def user_units() -> Path:
    """Where systemd looks for a user's own units: ``$XDG_CONFIG_HOME/systemd/user``."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / "systemd" / "user"


def credentials_path(args) -> Path:
    """The credentials file this command was given (the unit names it, absolute)."""
    from cli.credentials import DEFAULT_PATH

    given = args.credentials or os.environ.get("MARKET_CREDENTIALS") or str(DEFAULT_PATH)
    return Path(given).expanduser().resolve()


def marketctl_command() -> list[str]:
    """How the unit starts marketctl: the installed script if there is one, else this Python."""
    script = shutil.which("marketctl")
    return [str(Path(script).resolve())] if script else [sys.executable, "-m", "cli.main"]


def unit_name(worker_id: str) -> str:
    return f"market-worker-{worker_id}.service"


def service_unit(worker_id: str, command: list[str], credentials: Path, run_options: list[str]) -> str:
    """A systemd user unit that runs this worker from log-in on (pure)."""
    exec_start = " ".join(_systemd_quote(a) for a in [*command, "--credentials", str(credentials), "worker", "run",
                                                     *run_options])
    return (
        "[Unit]\n"
        f"Description=compute market worker {worker_id}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Environment=MARKET_LOG_LEVEL=info\n"
        # SIGTERM: running jobs checkpoint at their next safe point; the lease's end bounds the wait
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=120\n"
        "Restart=on-failure\n"
        "RestartSec=30\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _systemd_quote(word: str) -> str:
    # systemd's ExecStart splits on spaces and reads double quotes and backslashes; % starts a specifier
    word = word.replace("%", "%%")
    if word and not re.search(r'[\s"\\\']', word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_run_options(run_options: list[str]) -> None:
    """The options must be `worker run`'s: a unit that fails at every log-in helps nobody."""
    from cli.main import build_parser

    try:
        build_parser().parse_args(["worker", "run", *run_options])
    except SystemExit as e:
        raise UsageError(f"not options of `marketctl worker run`: {' '.join(run_options)}") from e


def register(group, command) -> None:
    """Add ``worker earnings`` and ``worker install-service`` to the ``worker`` group."""
    sub = command("earnings", cmd_worker_earnings, "what your workers were paid: today, this month, in total "
                  "(with a worker's credentials: that worker's)", group)
    sub.add_argument("--month", nargs="?", const="current", metavar="YYYY-MM",
                     help="also list every payment of that month (default: this month)")
    sub.add_argument("--id", dest="worker", metavar="WORKER", help="one worker of yours only")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub = command("install-service", cmd_install_service, "write a systemd user unit that starts this worker at "
                  "log-in (needs its --credentials); options after -- are `worker run`'s", group)
    sub.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    sub.add_argument("run_options", nargs=argparse.REMAINDER,
                     help="`worker run` options for the service, after --, e.g. -- --idle-only --cpu-limit 50")
