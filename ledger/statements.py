"""Monthly statements, built by replaying the ledger's money events. Pure.

A statement starts from the accounts as the previous month closed (a
month-end snapshot, see ``ledger.months``) and folds the month's
money events with the same ``fold`` the live ledger uses, so its closing
balance is the ledger's balance to the micro-credit. Every posting to the
account in the month is a line; the closing balance is the opening balance
plus the lines, and the statements of all accounts close at a sum of zero.

Months are calendar months in UTC: an event belongs to the month of its
``recorded_at``, the ledger's clock. The statement says so.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from common.errors import MarketError
from ledger import money
from ledger.fold import Recorded, fold
from ledger.months import month_bounds
from ledger.postings import KIND, posting_lines
from ledger.state import Account, MarketState, Month

#: the events that change balances, credit limits or the set of accounts:
#: all a statement needs to replay
MONEY_TYPES = ("account.opened", "account.deposited", "account.credit_limit_set", "payment.posted", "account.welcomed")
FORMATS = ("table", "csv", "json", "html")
UNIT = "micro-credits (1 credit = 1,000,000)"
BOUNDARIES = "month boundaries are UTC"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class StatementError(MarketError):
    """A statement that cannot be made: a malformed or future month, an unknown account."""

    exit_code = 2


# ---- months -------------------------------------------------------------------

def parse_month(text: str) -> str:
    """``"2026-11"`` -> ``"2026-11"``; anything else is refused."""
    match = _MONTH.match(text.strip()) if isinstance(text, str) else None
    if not match or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1970:
        raise StatementError(f"month {text!r} is not a month: write YYYY-MM, e.g. 2026-11")
    return match[0]


def check_not_future(month: str, now: str) -> None:
    """A month that has not begun at ``now`` (ledger time) has no statement."""
    if month_bounds(month)[0] > now:
        raise StatementError(f"month {month} is in the future (the ledger's clock is at {now[:10]} UTC)")


# ---- what to read -------------------------------------------------------------

@dataclass(frozen=True)
class StatementPlan:
    """What a statement of one month reads: the snapshot of ``opening_month``
    (None: start from no accounts), the money events of ``before`` (a
    (first, last) sequence range, last None for "to the end") folded into
    the opening balances, and those of ``during``, the month itself."""

    opening_month: str | None
    before: tuple[int, int | None] | None
    during: tuple[int, int | None] | None


def plan_statement(months: list[Month], month: str) -> StatementPlan:
    """The latest closed month before ``month`` gives the opening balances.
    Only when the month before is still open (``month`` then has no events
    yet) are that month's events replayed too, so a statement reads one
    month of the log, never the whole of it."""
    known = sorted(months, key=lambda m: m.month)
    earlier = [m for m in known if m.month < month]
    closed = [m for m in earlier if m.last_seq is not None]
    opening = closed[-1].month if closed else None
    before = (earlier[-1].first_seq, None) if earlier and earlier[-1].last_seq is None else None
    this = next((m for m in known if m.month == month), None)
    return StatementPlan(opening, before, (this.first_seq, this.last_seq) if this else None)


# ---- building -----------------------------------------------------------------

def build_statements(month: str, opening_accounts: Iterable[Account], before: Iterable[Recorded],
                     during: Iterable[Recorded], only: Iterable[str] | None = None) -> dict:
    """Every statement of ``month`` (or of the accounts in ``only``).

    ``opening_accounts`` are the accounts at the end of a closed month before
    ``month`` (its snapshot); ``before`` the money events between that month
    and ``month`` (none when the previous month is closed); ``during`` the
    money events of ``month``, in sequence order."""
    state = MarketState()
    for account in opening_accounts:
        state.accounts[account.name] = Account(account.name, account.email, account.balance, account.credit_limit,
                                               account.opened_at, 0)
    for event in before:
        fold(state, event)
    opening = {name: account.balance for name, account in state.accounts.items()}
    lines: dict[str, list[dict]] = defaultdict(list)
    for event in during:
        derived = fold(state, event)
        for posting, line in _lines(event, derived):
            lines[posting].append(line)
    names = sorted(state.accounts) if only is None else sorted(set(only))
    statements = [_statement(month, name, state.accounts.get(name), opening.get(name, 0), lines.get(name, []))
                  for name in names]
    start, end = month_bounds(month)
    answer = {"month": month, "from": start, "until": end, "time_zone": "UTC", "unit": UNIT,
              "statements": statements}
    if only is None:
        answer["sum_of_closing_balances"] = sum(s["closing_balance"] for s in statements)
    return answer


def _lines(event: Recorded, derived) -> list[tuple[str, dict]]:
    """(account, line) for every posting the event made."""
    return posting_lines(event, any(d.type == "request.rejected" for d in derived))


def _statement(month: str, name: str, account: Account | None, opening: int, lines: list[dict]) -> dict:
    closing = account.balance if account else 0
    if opening + sum(line["amount"] for line in lines) != closing:
        # the lines and the fold disagree: a bug, never a statement to print
        raise AssertionError(f"statement of {name} for {month} does not add up")
    totals = {kind: 0 for kind in KIND.values()}
    by_job: dict[str, dict] = {}
    by_worker: dict[str, dict] = {}
    for line in lines:
        totals[line["kind"]] += line["amount"]
        if line["kind"] == "spent":
            _add(by_job, "job_id", line, line["amount"])
        elif line["kind"] == "earned":
            entry = _add(by_worker, "worker_id", line, line["amount"])
            entry["commission"] = entry.get("commission", 0) + line["commission"]
    return {
        "account": name, "exists": account is not None, "credit_limit": account.credit_limit if account else 0,
        "opening_balance": opening, "closing_balance": closing, "lines": lines, "totals": totals,
        "spent_by_job": [by_job[k] for k in sorted(by_job)],
        "earned_by_worker": [by_worker[k] for k in sorted(by_worker)],
    }


def _add(subtotals: dict, key: str, line: dict, amount: int) -> dict:
    entry = subtotals.setdefault(line[key], {key: line[key], "payments": 0, "executed_ms": 0, "amount": 0})
    entry["payments"] += 1
    entry["executed_ms"] += line["executed_ms"]
    entry["amount"] += amount
    return entry


# ---- formats --------------------------------------------------------------------

def render(answer: dict, fmt: str) -> str:
    """The statements as text in ``fmt`` (table, csv, json, html): the same
    answer always renders to the same bytes."""
    renderers = {"table": render_table, "csv": render_csv, "json": render_json, "html": render_html}
    if fmt not in renderers:
        raise StatementError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return renderers[fmt](answer)


def _credits(micro: int | None) -> str:
    return "" if micro is None else money.format_credits(micro)


def _seconds(ms: int | None) -> str:
    return "" if ms is None else money.format_seconds(ms)


def _period(answer: dict) -> str:
    return f"{answer['from']} to {answer['until']} ({BOUNDARIES}; amounts in credits)"


LINE_HEADER = (f"{'time (UTC)':<27} {'seq':>8}  {'kind':<10} {'job':<18} {'lease':<26} {'worker':<18} "
               f"{'executed s':>11} {'price/h':>14} {'amount':>16} {'commission':>13}  reference")


def render_table(answer: dict) -> str:
    out = io.StringIO()
    for s in answer["statements"]:
        out.write(f"Statement of {s['account']} for {answer['month']}\n")
        out.write(f"Period: {_period(answer)}\n")
        out.write(f"Opening balance: {_credits(s['opening_balance'])}\n")
        out.write(LINE_HEADER + "\n")
        for line in s["lines"]:
            out.write(f"{line['time']:<27} {line['seq']:>8}  {line['kind']:<10} {line['job_id'] or '-':<18} "
                      f"{line['lease_id'] or '-':<26} {line['worker_id'] or '-':<18} "
                      f"{_seconds(line['executed_ms']) or '-':>11} {_credits(line['price']) or '-':>14} "
                      f"{_credits(line['amount']):>16} {_credits(line['commission']) or '-':>13}  "
                      f"{line['reference'] or ''}".rstrip() + "\n")
        if not s["lines"]:
            out.write("(no postings this month: the balance is carried)\n")
        totals = s["totals"]
        out.write(f"Deposits: {_credits(totals['deposit'])}\n")
        if totals["funding"]:
            out.write(f"Funding (money in from outside): {_credits(totals['funding'])}\n")
        out.write(f"Spent: {_credits(totals['spent'])}\n")
        for job in s["spent_by_job"]:
            out.write(f"  job {job['job_id']}: {job['payments']} payments, {_seconds(job['executed_ms'])} s, "
                      f"{_credits(job['amount'])}\n")
        out.write(f"Earned: {_credits(totals['earned'])}\n")
        for worker in s["earned_by_worker"]:
            out.write(f"  worker {worker['worker_id']}: {worker['payments']} payments, "
                      f"{_seconds(worker['executed_ms'])} s, {_credits(worker['amount'])} "
                      f"(after {_credits(worker['commission'])} commission)\n")
        if totals["commission"]:
            out.write(f"Commissions: {_credits(totals['commission'])}\n")
        out.write(f"Closing balance: {_credits(s['closing_balance'])}\n")
        if "held" in s:
            out.write(f"Held by running leases: {_credits(s['held'])}; available: {_credits(s['available'])} "
                      "(balance + credit limit - held)\n")
        out.write("\n")
    if not answer["statements"]:
        out.write(f"No accounts in {answer['month']} (period {_period(answer)})\n")
    if "sum_of_closing_balances" in answer:
        out.write(f"Sum of all closing balances: {_credits(answer['sum_of_closing_balances'])} "
                  f"({len(answer['statements'])} accounts)\n")
    return out.getvalue()


CSV_COLUMNS = ("account", "month", "seq", "time", "kind", "job_id", "lease_id", "worker_id", "executed_seconds",
               "price_per_hour", "amount", "commission", "reference")


def render_csv(answer: dict) -> str:
    """One row per posting, framed by each account's opening and closing balance."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    month, start, end = answer["month"], answer["from"], answer["until"]
    for s in answer["statements"]:
        writer.writerow([s["account"], month, "", start, "opening balance", "", "", "", "", "",
                         _credits(s["opening_balance"]), "", BOUNDARIES])
        for line in s["lines"]:
            writer.writerow([s["account"], month, line["seq"], line["time"], line["kind"], line["job_id"] or "",
                             line["lease_id"] or "", line["worker_id"] or "", _seconds(line["executed_ms"]),
                             _credits(line["price"]), _credits(line["amount"]), _credits(line["commission"]),
                             line["reference"] or ""])
        writer.writerow([s["account"], month, "", end, "closing balance", "", "", "", "", "",
                         _credits(s["closing_balance"]), "", BOUNDARIES])
    return out.getvalue()


def render_json(answer: dict) -> str:
    return json.dumps(answer, indent=2, sort_keys=True) + "\n"


def render_html(answer: dict) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Statements {e(answer['month'])}</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}td.n{text-align:right;font-family:monospace}</style>",
             "</head><body>",
             f"<h1>Statements for {e(answer['month'])}</h1>", f"<p>Period: {e(_period(answer))}</p>"]
    heads = ("time (UTC)", "seq", "kind", "job", "lease", "worker", "executed s", "price/h", "amount", "commission",
             "reference")
    for s in answer["statements"]:
        parts.append(f"<section><h2>{e(s['account'])}</h2>")
        parts.append(f"<p>Opening balance: <b>{_credits(s['opening_balance'])}</b></p>")
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for line in s["lines"]:
            cells = [(line["time"], ""), (str(line["seq"]), "n"), (line["kind"], ""), (line["job_id"] or "", ""),
                     (line["lease_id"] or "", ""), (line["worker_id"] or "", ""),
                     (_seconds(line["executed_ms"]), "n"), (_credits(line["price"]), "n"),
                     (_credits(line["amount"]), "n"), (_credits(line["commission"]), "n"),
                     (line["reference"] or "", "")]
            parts.append("<tr>" + "".join(f'<td class="{c}">{e(v)}</td>' if c else f"<td>{e(v)}</td>"
                                          for v, c in cells) + "</tr>")
        parts.append("</table>")
        totals = s["totals"]
        parts.append("<ul>" + "".join(f"<li>{label}: {_credits(totals[key])}</li>" for label, key in
                                      (("Deposits", "deposit"), ("Spent", "spent"), ("Earned", "earned"),
                                       ("Commissions", "commission"), ("Funding", "funding"))) + "</ul>")
        if s["spent_by_job"]:
            parts.append("<p>Spent by job:</p><ul>" + "".join(
                f"<li>{e(j['job_id'])}: {j['payments']} payments, {_seconds(j['executed_ms'])} s, "
                f"{_credits(j['amount'])}</li>" for j in s["spent_by_job"]) + "</ul>")
        if s["earned_by_worker"]:
            parts.append("<p>Earned by worker:</p><ul>" + "".join(
                f"<li>{e(w['worker_id'])}: {w['payments']} payments, {_seconds(w['executed_ms'])} s, "
                f"{_credits(w['amount'])} (after {_credits(w['commission'])} commission)</li>"
                for w in s["earned_by_worker"]) + "</ul>")
        parts.append(f"<p>Closing balance: <b>{_credits(s['closing_balance'])}</b></p></section>")
    if "sum_of_closing_balances" in answer:
        parts.append(f"<p>Sum of all closing balances: {_credits(answer['sum_of_closing_balances'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
