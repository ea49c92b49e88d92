"""A broker address that may name several nodes of one cluster.

``MARKET_AMQP_URL`` (and a credentials file's ``amqp_url``) is one URL or a
comma-separated list of them, one per node. Clients try them in turn from a
random start, so a market's many clients spread over the nodes and every
node but one may be down.
"""
from __future__ import annotations

import random

from broker_setup.errors import BrokerError


def split_urls(urls: str) -> list[str]:
    """The URLs of a comma-separated list, in order; BrokerError when there is none."""
    found = [url.strip() for url in urls.split(",") if url.strip()]
    if not found:
        raise BrokerError(f"no broker URL in {urls!r}: MARKET_AMQP_URL is one URL or several, comma-separated")
    return found


def connection_order(urls: str, rng: random.Random | None = None) -> list[str]:
    """Every URL of ``urls`` once, starting from a random one and going round in
    list order (a rotation, so a client that finds its node down tries the next)."""
    found = split_urls(urls)
    start = (rng or random).randrange(len(found))
    return found[start:] + found[:start]


def first_url(urls: str) -> str:
    """The first URL of the list (its user and secret are every URL's)."""
    return split_urls(urls)[0]


def map_urls(urls: str, change) -> str:
    """``change(url)`` applied to every URL of the list, joined again."""
    return ",".join(change(url) for url in split_urls(urls))
