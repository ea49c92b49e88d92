"""A map entry whose every result is over the inline threshold (issue 17):
item ``n`` gives ``n`` repeated ``"letter"`` strings of 1.5 M characters, so
each chunk's result goes through the blob store."""

#: characters of each result: over MARKET_INLINE_BLOB_BYTES (1 MiB) as JSON
LENGTH = 1_500_000


def letters(item):
    return chr(ord("a") + item) * LENGTH


def summary(results):
    """The reduce: each result's letter and length."""
    return [f"{result[0]}{len(result)}" for result in results]
