"""Count the words of a text, one line per item, as a map job.

``count`` is called with one line (an item of the map) and returns that
line's words and how often each occurs; ``merge`` (the reduce) adds the
counts of every line up and keeps the most frequent words. Run it over the
shipped text, eight lines a chunk::

    marketctl map examples/jobs/word_count.py:count --items examples/jobs/word_count_items.jsonl \
        --name "Word Count" --price 3.5 --chunk 8 --reduce examples/jobs/word_count.py:merge
    marketctl result JOB        # {"lines": ..., "words": ..., "top": [[word, count], ...]}

Without ``--reduce``, ``marketctl result JOB`` prints each line's counts, in
the order of the lines.
"""
import re

WORD = re.compile(r"[a-z']+")


def count(line):
    """One line's words -> ``{word: occurrences}``."""
    counts = {}
    for word in WORD.findall(line.lower()):
        word = word.strip("'")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return counts


def merge(results):
    """Every line's counts, in order -> the text's totals and its ten most frequent words."""
    totals = {}
    for counts in results:
        for word, n in (counts or {}).items():  # a failed chunk's lines are null (--allow-failures)
            totals[word] = totals.get(word, 0) + n
    top = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))[:10]
    return {"lines": len(results), "words": sum(totals.values()), "distinct": len(totals),
            "top": [[word, n] for word, n in top]}
