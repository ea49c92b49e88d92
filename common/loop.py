"""The event loop every long-running agent runs on.

uvloop, when installed (it is a dependency), replaces asyncio's pure-Python
loop: every AMQP frame, socket write, future and callback of an agent goes
through the loop, and on the dispatch hot path uvloop cuts that client-side
CPU substantially (bench/dispatch.py prints CPU per job by process). Without
it, the standard loop runs the same code.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps a bare checkout running
    uvloop = None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when it is available."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
