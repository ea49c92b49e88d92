"""marketctl submit's time limits: ``--max-runtime SECONDS`` and ``--deadline ISO-TIME`` (ledger.fold_limits)."""
from __future__ import annotations

from datetime import datetime, timezone

from common.errors import MarketError
from contracts.envelope import format_time

#: the longest --max-runtime (the contract's bound: a year)
MAX_RUNTIME_SECONDS = 366 * 24 * 3600


class LimitError(MarketError):
    exit_code = 2


def add_limit_options(sub) -> None:
    sub.add_argument("--max-runtime", metavar="SECONDS",
                     help="executed seconds across all its leases; past them the job fails ('max-runtime "
                          "exceeded') and is charged only for the work accepted")
    sub.add_argument("--deadline", metavar="ISO-TIME",
                     help="a wall-clock time with its zone, e.g. 2026-12-24T18:00:00Z; past it the job runs no "
                          "more and fails ('deadline passed'), charged only for the work accepted")


def limit_fields(args) -> dict:
    """The ``job.submitted`` fields for the limits given (none for those not given)."""
    fields = {}
    if getattr(args, "max_runtime", None) is not None:
        fields["max_runtime_seconds"] = parse_max_runtime(args.max_runtime)
    if getattr(args, "deadline", None) is not None:
        fields["deadline"] = parse_deadline(args.deadline)
    return fields


def parse_max_runtime(text: str) -> int:
    cleaned = text.strip()
    if not cleaned.isascii() or not cleaned.isdigit() or not 1 <= int(cleaned) <= MAX_RUNTIME_SECONDS:
        raise LimitError(f"--max-runtime must be a whole number of seconds from 1 to {MAX_RUNTIME_SECONDS}, "
                         f"not {text!r}")
    return int(cleaned)


def parse_deadline(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise LimitError(f"--deadline must be an ISO time such as 2026-12-24T18:00:00Z, not {text!r}") from e
    if moment.tzinfo is None:
        raise LimitError(f"--deadline {text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return format_time(moment.astimezone(timezone.utc))
