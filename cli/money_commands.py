"""marketctl reprice, bill, accounts credit-limit: the money commands."""
from __future__ import annotations

import argparse
import asyncio
import sys

from cli.money import format_credits, parse_credits
from cli.request_ids import add_request_id
from cli.paging import add_page_options, ask_page, print_next
from cli.requests import send_and_check
from contracts.routing import OPERATOR_ACTOR
from ledger.statements import FORMATS, StatementError, check_not_future, parse_month, render


def cmd_reprice(settings, args) -> int:
    price = parse_credits(args.price, what="price")
    send_and_check(settings, args.account, "job.repriced", {"job_id": args.job_id, "price": price}, args.request_id)
    print(f"job {args.job_id}: {format_credits(price)} credits per hour from its next lease")
    return 0


def cmd_credit_limit(settings, args) -> int:
    limit = parse_credits(args.amount, allow_zero=True, what="credit limit")
    reply = send_and_check(settings, args.account, "account.credit_limit_set",
                           {"account": args.name, "credit_limit": limit}, args.request_id)
    print(f"{args.name} may now go {format_credits(limit)} credits below zero (ledger sequence {reply['seq']})")
    return 0


def cmd_bill(settings, args) -> int:
    month = parse_month(args.month)
    # refused here already, so a future month costs no round trip; the ledger checks again
    check_not_future(month, settings.ledger_clock()())
    if args.all_accounts and args.statement_account:
        raise StatementError("--account and --all exclude each other")
    question = {"month": month, "all_accounts": args.all_accounts}
    if args.statement_account:
        question["account"] = args.statement_account
    answer, cursor = asyncio.run(ask_page(settings, args.account, "statement", question, args))
    text = render(answer, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        print(f"wrote {len(answer['statements'])} statement(s) for {month} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    print_next(cursor, "bill", args)
    return 0


def register(commands, command) -> None:
    """Add the money commands to marketctl's parser."""
    sub = command("reprice", cmd_reprice, "change the price of one of your jobs; it applies from its next lease")
    sub.add_argument("job_id")
    sub.add_argument("price", help="credits per hour of execution, e.g. 5.2 (up to 6 decimals)")
    add_request_id(sub)
    sub = command("bill", cmd_bill, "monthly statements, replayed from the ledger (month boundaries are UTC)")
    sub.add_argument("--month", required=True, metavar="YYYY-MM", help="the month, e.g. 2026-11")
    sub.add_argument("--account", dest="statement_account", metavar="NAME",
                     help="whose statement (default: your own; the operator gets every account's)")
    sub.add_argument("--all", dest="all_accounts", action="store_true",
                     help=f"every account's statement ({OPERATOR_ACTOR} only)")
    sub.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv, json or html")
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    add_page_options(sub)
    accounts = _subcommands(commands.choices["accounts"])
    sub = command("credit-limit", cmd_credit_limit, "set how far an account may go below zero (operator only)",
                  accounts)
    sub.add_argument("name")
    sub.add_argument("amount", help="credits, e.g. 50 (0: no credit)")
    add_request_id(sub)


def _subcommands(parser: argparse.ArgumentParser):
    """The sub-command group of an existing command (``accounts``)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
