"""Faults a test worker injects on purpose: never on unless its process was
started with the variable below (the e2e tests start such a lying worker to
prove a replicated job's quorum outvotes it).

Read once, from the worker process's own environment, when the agent starts:
a job runs in a sandboxed child and cannot change it, and no message or
event field reaches it. It is deliberately not a ``common.settings`` field,
so no configuration file or ``marketctl`` option can turn it on.
"""
from __future__ import annotations

import os

#: set to 1 to make this worker report every result corrupted (a lying worker)
CORRUPT_RESULTS_VARIABLE = "MARKET_TEST_CORRUPT_RESULTS"
#: what a corrupting worker appends to each result: the hash changes, the job's bytes are kept
CORRUPTION = b"\x00corrupted by MARKET_TEST_CORRUPT_RESULTS"


#: set to 1 to make this worker report every checkpoint's state corrupted (the
#: bytes after a pickle's end are never read: the job goes on, its hash differs)
CORRUPT_CHECKPOINTS_VARIABLE = "MARKET_TEST_CORRUPT_CHECKPOINTS"


def corrupts_results() -> bool:
    return os.environ.get(CORRUPT_RESULTS_VARIABLE) == "1"


def corrupts_checkpoints() -> bool:
    return os.environ.get(CORRUPT_CHECKPOINTS_VARIABLE) == "1"


def corrupted(result: bytes) -> bytes:
    return result + CORRUPTION
