"""`marketctl dlq`: what was dead-lettered and why, and replaying it once the
cause is fixed. The operator's tool on the market's host only."""
from __future__ import annotations

import asyncio
import json
import sys

from broker_setup.amqp import Publisher, connect
from broker_setup.dead_letters import DeadLetterError, dead_letter_queue_named, find, orjson_object, peek, replay


def _operator_only(args) -> None:
    if getattr(args, "credentials_found", None) is not None:
        raise DeadLetterError("`marketctl dlq` is the operator's tool on the market's host: run it without "
                              "a member's or a worker's credentials")


async def _with_letters(settings, queue_name: str, act):
    """Open the operator's connection, peek ``queue_name`` and ``await act(letters, publisher)``;
    closing the channel returns every letter ``act`` did not settle to the queue."""
    connection = await connect(settings, "marketctl: dlq")
    async with connection:
        channel = await connection.channel()
        async with Publisher(connection) as publisher:
            letters = await peek(channel, queue_name)
            return await act(letters, publisher)


def cmd_dlq_list(settings, args) -> int:
    _operator_only(args)
    queue_name = dead_letter_queue_named(settings, args.queue)

    async def summaries(letters, _):
        return [letter.summary() for letter in letters]

    found = asyncio.run(_with_letters(settings, queue_name, summaries))
    if args.json:
        print(json.dumps({"queue": queue_name, "count": len(found), "messages": found}, indent=2))
        return 0
    print(f"{queue_name}: {len(found)} dead letter{'s' if len(found) != 1 else ''}")
    for letter in found:
        print(f"  {letter['id']}  {letter['first_death'] or '-'}  {letter['event_type'] or '-'} "
              f"{letter['event_id'] or '-'}  from {letter['user_id'] or '-'}\n    {letter['reason']}")
    return 0


def cmd_dlq_show(settings, args) -> int:
    _operator_only(args)
    queue_name = dead_letter_queue_named(settings, args.queue)

    async def one(letters, _):
        letter = find(letters, args.id)
        return letter.summary(), letter.body

    summary, body = asyncio.run(_with_letters(settings, queue_name, one))
    print(json.dumps(summary, indent=2))
    parsed = orjson_object(body)
    if parsed:
        print(json.dumps(parsed, indent=2, sort_keys=True))
    else:
        sys.stdout.write(body.decode(errors="replace") + "\n")
    return 0


def cmd_dlq_replay(settings, args) -> int:
    _operator_only(args)
    queue_name = dead_letter_queue_named(settings, args.queue)
    if not args.all and not args.id:
        raise DeadLetterError("say which: --id ID (from `marketctl dlq list`) or --all")

    async def send(letters, publisher):
        chosen = letters if args.all else [find(letters, args.id)]
        await replay(publisher, chosen)
        return [letter.id for letter in chosen]

    replayed = asyncio.run(_with_letters(settings, queue_name, send))
    print(f"replayed {len(replayed)} message{'s' if len(replayed) != 1 else ''} from {queue_name}"
          + (f": {', '.join(replayed)}" if replayed else ""))
    return 0


def register(commands, command) -> None:
    """Add `marketctl dlq` to the parser."""
    group = commands.add_parser("dlq", help="dead-letter queues (operator)").add_subparsers(
        dest="dlq_command", metavar="SUBCOMMAND", required=True)
    sub = command("list", cmd_dlq_list, "what a dead-letter queue holds: count, and each message's id, reason, "
                  "event type and id, first death", group)
    sub.add_argument("queue", metavar="QUEUE", help="e.g. ledger.inbox.dead (or ledger.inbox)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub = command("show", cmd_dlq_show, "one dead letter: where it came from, and its body", group)
    sub.add_argument("queue", metavar="QUEUE")
    sub.add_argument("id", metavar="ID", help="its id, from `marketctl dlq list`")
    sub = command("replay", cmd_dlq_replay, "publish dead letters again where they were first sent (with "
                  "confirms), then remove them; the ledger skips event ids it already holds", group)
    sub.add_argument("queue", metavar="QUEUE")
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--id", help="the one to replay")
    which.add_argument("--all", action="store_true", help="every one in the queue")
