"""``--request-id``: the id a script gives a request so that sending the same
command again is applied once (cli.requests keeps one id per command)."""
from __future__ import annotations

import argparse
import uuid


def request_id(text: str) -> str:
    """``--request-id``: a UUID of a producer's versions (4 or 7), as the ledger takes them."""
    from contracts.envelope import PRODUCER_ID_VERSIONS

    try:
        parsed = uuid.UUID(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID (e.g. from `uuidgen -r`)") from e
    if parsed.version not in PRODUCER_ID_VERSIONS:
        raise argparse.ArgumentTypeError(f"{text} is a version {parsed.version} UUID; a request id is a "
                                         "random (version 4) or time-ordered (version 7) UUID")
    return str(parsed)


def add_request_id(parser: argparse.ArgumentParser) -> None:
    """The ``--request-id`` option of a command that moves money or changes a job."""
    parser.add_argument("--request-id", type=request_id, metavar="UUID",
                        help="the request's id (UUID v4 or v7): sending the same command again with the same id "
                             "is applied once and answered as the first time (default: a new id per command)")
