"""Prebuilt jobs: the examples, submitted in one click by a newcomer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "jobs"


@dataclass(frozen=True)
class Prebuilt:
    slug: str
    title: str
    file: str
    entry: str
    args: dict
    price: str
    what: str
    checkpoints: str
    #: a map job's (issue 17): its items (a .jsonl file next to the module) and items per chunk
    items: str | None = None
    chunk: int = 0

    @property
    def path(self) -> Path:
        return EXAMPLES / self.file


CATALOGUE = (
    Prebuilt("bubble-sort", "Bubble Sort", "bubble_sort.py", "sort",
             {"items": [31, 7, 19, 3, 42, 11, 25, 1, 38, 14, 9, 27]}, "5.2",
             "Sorts twelve numbers by swapping neighbours until no pair is out of order.",
             "After every pass over the list the job yields the list so far: a worker may stop there and "
             "another machine continue with the next pass."),
    Prebuilt("find-factors", "Find Factors", "find_factors.py", "factors", {"number": 600851475143}, "3.5",
             "Finds the prime factors of 600851475143 by trial division.",
             "Every 200,000 candidates it yields the number left to factor and the factors found so far."),
    Prebuilt("monte-carlo-pi", "Monte Carlo Pi", "monte_carlo_pi.py", "estimate",
             {"samples": 2000000, "chunk": 100000, "seed": 7}, "3.5",
             "Estimates pi from two million random points in the unit square.",
             "After each chunk of 100,000 points it yields its counts and its random generator's state, so a "
             "resumed run draws exactly the points an uninterrupted one would have."),
    Prebuilt("particles", "Particles", "particles.py", "simulate", {"particles": 200, "steps": 5000, "seed": 3},
             "3.5",
             "Simulates 200 particles bouncing in a box for 5,000 steps.",
             "Its state is a Python object (a Simulation of Particles); every 250 steps it is pickled as a "
             "checkpoint and unpickled on whichever worker runs the next lease."),
    Prebuilt("word-count", "Word Count (map)", "word_count.py", "count", {}, "3.5",
             "Counts the words of a poem, line by line: a map job whose chunks of four lines run in parallel "
             "on many workers, each an ordinary job; their results are put back in the order of the lines.",
             "A safe point between lines: a chunk stopped there goes on with its next line on any worker.",
             items="word_count_items.jsonl", chunk=4),
)
BY_SLUG = {p.slug: p for p in CATALOGUE}
