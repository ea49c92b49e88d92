"""``--limit`` and ``--after`` for marketctl's listings: one page per run,
and the command that prints the next one."""
from __future__ import annotations

import shlex
import sys

from cli.requests import requester_as
from contracts.paging import DEFAULT_LIMIT, MAX_LIMIT


def add_page_options(sub) -> None:
    sub.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                     help=f"rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})")
    sub.add_argument("--after", metavar="CURSOR", help="the page after CURSOR (printed at the end of a page)")


async def ask_page(settings, account: str, query: str, args: dict, page_args) -> tuple[object, str | None]:
    """One page of ``query`` as ``account``: (data, next cursor or None)."""
    question = dict(args, limit=page_args.limit)
    if page_args.after:
        question["after"] = page_args.after
    async with requester_as(settings, account) as requester:
        return await requester.ask_page(query, question, user_id=account, timeout=settings.reply_timeout)


def print_next(cursor: str | None, command: str, page_args) -> None:
    """On standard error (standard output stays the page alone): how to get the next page."""
    if cursor:
        words = [*sys.argv[1:]] if sys.argv[1:] else command.split()
        words = _without_after(words)
        print(f"more: marketctl {shlex.join(words)} --after {cursor}", file=sys.stderr)


def _without_after(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--after":
            skip = True
        elif not word.startswith("--after="):
            kept.append(word)
    return kept
