"""marketctl: the one command line of the compute market.

Every command reads its settings from ``MARKET_*`` environment variables
(see ``marketctl settings``); ``--as ACCOUNT`` chooses the account it acts as.
"""
from __future__ import annotations

import argparse
import json
import sys

import structlog

from common.errors import MarketError
from common.logs import configure_logging
from common.settings import Settings, SettingsError


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


# ---- the stack ------------------------------------------------------------------

def cmd_up(settings, args) -> int:
    from cli.stack import up

    if args.cluster is not None:
        settings = settings.replace(cluster_size=args.cluster)
        settings.check_cluster_size()
    up(settings, workers=args.workers, db=args.db)
    print("market is up: `marketctl status` shows it, `marketctl down` stops it")
    return 0


def cmd_down(settings, args) -> int:
    from cli.stack import down

    down(settings)
    return 0


def cmd_status(settings, args) -> int:
    from cli.status import format_status, status

    report = status(settings)
    _print_json(report) if args.json else print(format_status(report))
    return 0


def cmd_settings(settings, args) -> int:
    import dataclasses

    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    from cli.stack import _safe_url

    from broker_setup.urls import map_urls

    values.update(amqp_url=map_urls(settings.amqp_url, _safe_url), db_url=_safe_url(settings.db_url),
                  service_password="***" if settings.service_password else None)
    _print_json(values)
    return 0


# ---- the broker -------------------------------------------------------------------

def cmd_broker_definitions(settings, args) -> int:
    from broker_setup.definitions import definitions
    from broker_setup.topology import topology

    _print_json(definitions(topology(settings), settings))
    return 0


# ---- the ledger -------------------------------------------------------------------

def _store(settings):
    from ledger.migrate import make_engine
    from ledger.store import LedgerStore

    return LedgerStore(make_engine(settings.db_url))


def cmd_ledger_verify(settings, args) -> int:
    from ledger.replay import verify_chain

    report = verify_chain(_store(settings).iter_events())
    if args.json:
        _print_json({"ok": report.ok, "checked": report.checked, "first_bad_seq": report.first_bad_seq,
                     "reason": report.reason})
    elif report.ok:
        print(f"hash chain verified: {report.checked} events")
    else:
        print(f"hash chain broken at sequence {report.first_bad_seq}: {report.reason}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_ledger_gc(settings, args) -> int:
    from datetime import timedelta

    from contracts.envelope import utc_now_iso
    from ledger.gc import collect_blobs

    days = settings.blob_retention_days if args.older_than is None else args.older_than
    if days < 0:
        raise SettingsError("--older-than takes a number of days, 0 or more")
    report = collect_blobs(_store(settings).engine, utc_now_iso(), timedelta(days=days), dry_run=args.dry_run)
    inputs = _collect_inputs(settings, args)
    if args.json:
        _print_json({"removed": report.removed, "removed_bytes": report.removed_bytes, "kept": report.kept,
                     "older_than_days": days, "dry_run": args.dry_run, **inputs})
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {report.removed} blobs ({report.removed_bytes} bytes) of refused or rejected requests "
              f"older than {days:g} days; kept {report.kept} (recent, or needed elsewhere)")
        print(f"{verb} {inputs['inputs_removed']} input blobs ({inputs['inputs_removed_bytes']} bytes) no job "
              f"needs, older than {inputs['inputs_retention_seconds']:g} s; kept {inputs['inputs_kept']}")
        print(f"{verb} {inputs['uploads_removed']} uploads ({inputs['uploads_removed_bytes']} bytes) nobody "
              f"adopted or left behind, older than {inputs['inputs_retention_seconds']:g} s")
    return 0


def _collect_inputs(settings, args) -> dict:
    """issue 17: the blob store's inputs no job needs, past MARKET_BLOB_RETENTION_SECONDS."""
    from blobstore import open_store
    from contracts.envelope import utc_now_iso
    from ledger.gc_inputs import collect_inputs

    seconds = settings.blob_retention_seconds
    report = collect_inputs(_store(settings).engine, open_store(settings), utc_now_iso(), seconds,
                            dry_run=args.dry_run)
    return {"inputs_removed": report.removed, "inputs_removed_bytes": report.removed_bytes,
            "inputs_kept": report.kept, "inputs_retention_seconds": seconds,
            "uploads_removed": report.removed_uploads, "uploads_removed_bytes": report.removed_upload_bytes}


def cmd_replay(settings, args) -> int:
    from ledger.replay import replay_and_verify

    if not args.verify:
        print("nothing to do: `marketctl replay --verify` rebuilds the projections and compares them",
              file=sys.stderr)
        return 2
    report = replay_and_verify(_store(settings), args.scratch_url)
    if args.json:
        _print_json({"ok": report.ok, "events": report.events, "rows_compared": report.rows_compared,
                     "differences": report.differences})
    elif report.ok:
        print(f"replay matches: {report.events} events folded, {report.rows_compared} projection rows identical")
    else:
        print(f"replay differs from the live projections ({len(report.differences)} shown):", file=sys.stderr)
        for line in report.differences:
            print(f"  {line}", file=sys.stderr)
    return 0 if report.ok else 1


# ---- accounts ---------------------------------------------------------------------

def cmd_accounts_open(settings, args) -> int:
    from cli.money import parse_credits
    from cli.requests import send_and_check

    payload = {"account": args.name, "email": args.email,
               "credit_limit": parse_credits(args.credit_limit, allow_zero=True, what="credit limit")}
    credentials = None
    if args.credentials_out:
        from cli.keys import member_key

        payload["key_hash"], credentials = member_key(settings, args.name)
    reply = send_and_check(settings, args.account, "account.opened", payload)
    if credentials is not None:
        credentials.save(args.credentials_out)
    _print_json({"account": args.name, "seq": reply["seq"]}) if args.json else print(
        f"account {args.name} opened (ledger sequence {reply['seq']})")
    return 0


def cmd_accounts_deposit(settings, args) -> int:
    from cli.money import format_credits, parse_credits
    from cli.requests import send_and_check

    amount = parse_credits(args.amount)
    reply = send_and_check(settings, args.account, "account.deposited", {"account": args.name, "amount": amount},
                           args.request_id)
    print(f"deposited {format_credits(amount)} credits to {args.name} (ledger sequence {reply['seq']})")
    return 0


def _credit_state(row) -> str:
    from ledger.money import SYSTEM_ACCOUNTS

    if row.name in SYSTEM_ACCOUNTS:
        # `external` holds minus every deposit, `market` the commissions: not buyers
        return "system"
    return "ok" if row.balance + row.credit_limit - row.held >= 0 else "over limit"


def cmd_accounts_list(settings, args) -> int:
    from sqlalchemy import select

    from cli.money import format_credits
    from ledger import tables

    store = _store(settings)
    with store.engine.connect() as conn:
        rows = conn.execute(select(tables.accounts).order_by(tables.accounts.c.name)).all()
    accounts = [{"name": r.name, "email": r.email, "balance": format_credits(r.balance),
                 "credit_limit": format_credits(r.credit_limit), "held": format_credits(r.held),
                 "available": format_credits(r.balance + r.credit_limit - r.held),
                 "credit_state": _credit_state(r)} for r in rows]
    if args.json:
        _print_json(accounts)
        return 0
    print(f"{'name':<20} {'email':<30} {'balance':>16} {'credit limit':>14} {'held':>14} {'available':>16}  state")
    for a in accounts:
        print(f"{a['name']:<20} {a['email']:<30} {a['balance']:>16} {a['credit_limit']:>14} {a['held']:>14} "
              f"{a['available']:>16}  {a['credit_state']}")
    return 0


# ---- the parser ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from cli.request_ids import add_request_id

    parser = argparse.ArgumentParser(
        prog="marketctl",
        description="Run and use the community compute market.",
        epilog="Settings come from MARKET_* environment variables: `marketctl settings` shows them.")
    parser.add_argument("--as", dest="account", metavar="ACCOUNT",
                        help="act as this account (default: the credentials' account, else MARKET_ACCOUNT, "
                             "else 'operator'); only the operator's own tools may act for another account")
    parser.add_argument("--credentials", metavar="FILE",
                        help="a member's or a worker's credentials file (default: MARKET_CREDENTIALS, else "
                             "~/.config/market/credentials if it exists, else the operator's service user)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, handler, help_text, parent=commands):
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("up", cmd_up, "start the local broker (management UI on), migrate the ledger, start the agents")
    sub.add_argument("--workers", type=int, default=0, metavar="N",
                     help="also start N local workers, owned by the acting account (default 0)")
    sub.add_argument("--cluster", type=int, metavar="N",
                     help="run the local broker as a cluster of N nodes (3, 5 or 7) on this machine, every "
                          "queue that holds market state replicated on all of them")
    sub.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                     help="the live ledger's database: SQLite in MARKET_HOME (default) or a PostgreSQL cluster "
                          "that up keeps in MARKET_HOME/postgres (MARKET_PG_PORT); MARKET_DB_URL wins over both")
    command("down", cmd_down, "stop exactly what `up` started")
    sub = command("status", cmd_status, "which agents run, queue depths, the ledger's last sequence and outbox backlog")
    sub.add_argument("--json", action="store_true", help="print JSON")
    command("settings", cmd_settings, "print the settings in force (from MARKET_* variables)")

    broker = commands.add_parser("broker", help="the broker topology").add_subparsers(
        dest="broker_command", metavar="SUBCOMMAND", required=True)
    command("definitions", cmd_broker_definitions,
            "print the topology as a definitions JSON the management UI can import", broker)

    ledger = commands.add_parser("ledger", help="the append-only ledger").add_subparsers(
        dest="ledger_command", metavar="SUBCOMMAND", required=True)
    sub = command("verify", cmd_ledger_verify, "walk the hash chain; name the first bad sequence", ledger)
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub = command("gc", cmd_ledger_gc, "remove the blobs referenced only by refused or rejected requests older "
                  "than the retention period; print what was removed", ledger)
    sub.add_argument("--older-than", type=float, metavar="DAYS",
                     help="retention in days (default MARKET_BLOB_RETENTION_DAYS, 30)")
    sub.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = command("replay", cmd_replay, "rebuild every projection from the events and compare with the live ones")
    sub.add_argument("--verify", action="store_true", help="compare row by row; exit 1 on any difference")
    sub.add_argument("--scratch-url", help="database to rebuild into (default: a temporary SQLite file)")
    sub.add_argument("--json", action="store_true", help="print JSON")

    accounts = commands.add_parser("accounts", help="market accounts").add_subparsers(
        dest="accounts_command", metavar="SUBCOMMAND", required=True)
    sub = command("open", cmd_accounts_open, "open an account", accounts)
    sub.add_argument("name", help="account name (letters, digits, _.@-)")
    sub.add_argument("--email", required=True, help="contact e-mail")
    sub.add_argument("--credit-limit", default="0", help="credits it may go below zero (default 0)")
    sub.add_argument("--credentials-out", metavar="FILE",
                     help="also make the member's own broker key and write its credentials file here (0600)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub = command("deposit", cmd_accounts_deposit, "credit an account (decimal credits, up to 6 places)", accounts)
    sub.add_argument("name")
    sub.add_argument("amount", help="credits, e.g. 25 or 0.5")
    add_request_id(sub)
    sub = command("list", cmd_accounts_list, "accounts with balance and credit state", accounts)
    sub.add_argument("--json", action="store_true", help="print JSON")
    _job_commands(commands, command, accounts)
    return parser


def _job_commands(commands, command, accounts) -> None:
    from cli import jobs, worker
    from cli.request_ids import add_request_id
    from cli.paging import add_page_options
    from cli import report as report_commands

    sub = command("submit", jobs.cmd_submit, "submit FILE.py:ENTRY as a job at a price per hour of execution")
    sub.add_argument("target", metavar="FILE.py:ENTRY", help="the module and its job function")
    sub.add_argument("--name", required=True, help="a name for the job")
    sub.add_argument("--price", required=True, help="credits per hour of execution, e.g. 5.2 (up to 6 decimals)")
    sub.add_argument("--args", help="JSON: the initial state (or the argument of the module's initial_state)")
    sub.add_argument("--max-attempts", type=int, default=3, help="runs that may error before it fails (default 3)")
    sub.add_argument("--network", action="store_true",
                     help="ask for the network of the machine that runs the job: it runs only on workers whose "
                          "owners allow network (marketctl worker run --allow-network), and waits until one is "
                          "there; without it a job has only a loopback of its own, on every worker")
    sub.add_argument("--replicas", type=int, default=1, choices=(1, 2, 3),
                     help="run the job on this many workers of different owners and keep the result most of them "
                          "agree on (a third run breaks a tie of two); the price is per replica: each replica is "
                          "billed like a job, so N replicas cost about N times one run, 3 times if a tie-breaker "
                          "runs; a replica whose result is outvoted is not paid")
    from cli.limits import add_limit_options
    add_limit_options(sub)
    sub.add_argument("--wait", action="store_true", help="show progress until the job ends, then print the result")
    sub.add_argument("--json", action="store_true", help='print {"job_id": ..., "status": ...}')
    sub.add_argument("--input", dest="inputs", action="append", default=[], metavar="FILE",
                     help="an input file (repeatable): put in the blob store once, read by the job, read-only, "
                          "as inputs/<file name> (at most MARKET_MAX_INPUT_BYTES each)")
    sub.add_argument("--unsafe-no-sandbox", action="store_true",
                     help="load the module to check it as your own user, where this machine cannot confine it")
    add_request_id(sub)
    sub = command("jobs", jobs.cmd_jobs, "your jobs, newest first: price, status, checkpoints, executed time, worker")
    sub.add_argument("--json", action="store_true", help="print JSON")
    add_page_options(sub)
    sub = command("result", jobs.cmd_result, "the result of one of your completed jobs")
    sub.add_argument("job_id")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.add_argument("--raw", metavar="FILE", help="write the result blob as it is (e.g. a pickled object) to FILE")
    from cli import logs
    logs.add_artifacts_option(sub)
    sub = command("cancel", jobs.cmd_cancel, "cancel one of your jobs")
    sub.add_argument("job_id")
    add_request_id(sub)
    sub = command("workers", jobs.cmd_workers, "workers with owner (yours only), measured speed and state")
    sub.add_argument("--json", action="store_true", help="print JSON")
    add_page_options(sub)
    group = commands.add_parser("worker", help="run a worker on this machine").add_subparsers(
        dest="worker_command", metavar="SUBCOMMAND", required=True)
    sub = command("run", worker.cmd_worker_run, "run this machine as a worker on its own key: --credentials FILE "
                  "(from `worker register`), or --name to register it now (Ctrl-C: checkpoint running jobs and "
                  "exit; twice: exit at once)", group)
    sub.add_argument("--name", help="a name for this worker (registers it now, as the acting account)")
    sub.add_argument("--id", help="worker id (default: made from the name)")
    sub.add_argument("--lease-seconds", type=int, default=60, help="lease length it asks for (default 60)")
    sub.add_argument("--slots", type=int, default=1, help="jobs it runs at once (default 1)")
    sub.add_argument("--safety-margin", type=float, default=3.0,
                     help="seconds before the deadline by which a job is stopped and checkpointed (default 3)")
    sub.add_argument("--memory-mb", type=int, default=1024, help="memory limit of a job, MiB (default 1024)")
    sub.add_argument("--allow-network", action="store_true",
                     help="let jobs that ask for it (submit --network) use this machine's network; every other "
                          "job keeps a loopback of its own only (default: every job, loopback only)")
    sub.add_argument("--unsafe-no-sandbox", action="store_true",
                     help="run jobs unconfined, as your user, where this machine cannot confine them (a warning "
                          "every lease)")
    sub.add_argument("--check-sandbox", action="store_true",
                     help="run the hostile battery against this machine's sandbox, print what was contained, exit")
    worker.add_run_options(sub)
    from cli import worker_owner
    worker_owner.register(group, command)
    from cli import keys, login
    keys.register(group, accounts, command)
    login.register(commands, command)
    report_commands.register(commands, command)
    from cli import money_commands
    money_commands.register(commands, command)
    from cli import dlq
    dlq.register(commands, command)
    from cli import maps
    maps.register(commands, command)
    logs.register(commands, command)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from cli.local_servers import recorded

        # the broker cluster and database `up` started, unless the environment says otherwise
        settings = recorded(Settings.from_env())
        from cli.credentials import find, settings_for

        credentials = find(settings, args.credentials)
        if credentials is not None:
            # a member's or a worker's own key: it acts as itself, and the broker checks it
            settings = settings_for(settings, credentials)
            args.account = args.account or credentials.user
        args.credentials_found = credentials
        args.account = args.account or settings.account
        configure_logging("warning" if settings.log_level == "info" else settings.log_level)
        return args.handler(settings, args)
    except MarketError as e:
        structlog.get_logger("marketctl").debug("command.failed", exc_info=True)
        print(f"marketctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("marketctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (head, less) went away: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
