"""The statements' queries: a member's own month, and the operator's every account's, a page at a time."""
from __future__ import annotations

from sqlalchemy import select

from contracts.envelope import utc_now_iso
from contracts.routing import OPERATOR_ACTOR
from ledger import tables
from contracts.paging import Page, cut
from ledger.posting_statements import account_page, closing_sum, header, statements_of
from ledger.queries import QueryError, _one_snapshot, query
from ledger.snapshots import latest_time
from ledger.statements import StatementError, check_not_future, parse_month


@query("statement", paged=True)
def statement(conn, actor: str, page: Page, month: str, account: str | None = None,
              all_accounts: bool = False) -> tuple[dict, tuple | None]:
    """The monthly statements (``ledger.statements``) of the asker's own
    account, or of ``account`` or of every account (``all_accounts``) for the operator.

    Every account's: a page of accounts, by name. One account's: its whole
    month's balances and totals, and a page of its lines, by sequence."""
    _one_snapshot(conn)
    try:
        month = parse_month(month)
        # the ledger's clock may run ahead of this machine's (tests shift it): the later of the two
        check_not_future(month, max(utc_now_iso(), latest_time(conn) or ""))
    except StatementError as e:
        raise QueryError(str(e)) from e
    if all_accounts or (account is None and actor == OPERATOR_ACTOR):
        if actor != OPERATOR_ACTOR:
            raise QueryError("only the operator may read every account's statement")
        shown, next_name = account_page(conn, month, page.after[0] if page.after else "", page.limit)
        answer = dict(header(month, shown), sum_of_closing_balances=closing_sum(conn, month))
        return _with_holds(conn, month, answer), (next_name,) if next_name is not None else None
    name = account or actor
    if name != actor and actor != OPERATOR_ACTOR:
        raise QueryError("only the operator may read another account's statement")
    if conn.execute(select(tables.accounts.c.name).where(tables.accounts.c.name == str(name))).first() is None:
        raise QueryError(f"no account {name}")
    # only this account's postings rows are read (ledger.posting_statements)
    answer = header(month, statements_of(conn, month, [name]))
    (own,) = answer["statements"]
    after = page.after[0] if page.after else -1
    own["lines"], next_key = cut([line for line in own["lines"] if line["seq"] > after], page,
                                 lambda line: (line["seq"],))
    return _with_holds(conn, month, answer), next_key


def _with_holds(conn, month: str, answer: dict) -> dict:
    """The month still open closes at the live balances: its statements also
    say what running leases hold now and what is available (balance + credit
    limit - held). A closed month's statement stays the same bytes."""
    if conn.execute(select(tables.months.c.month).where(tables.months.c.month == month,
                                                        tables.months.c.last_seq.is_(None))).first() is None:
        return answer
    a = tables.accounts.c
    shown = [s["account"] for s in answer["statements"]]
    live = {r.name: r for r in conn.execute(select(a.name, a.balance, a.credit_limit, a.held)
                                             .where(a.name.in_(shown)))}
    for s in answer["statements"]:
        row = live.get(s["account"])
        if row is not None:
            s["held"], s["available"] = row.held, row.balance + row.credit_limit - row.held
    return answer
