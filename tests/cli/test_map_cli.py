"""marketctl map's checks before it sends anything (issue 17): bad items, a
bad chunk size, a missing entry or reduce function, a map too large: each a
clear one-line error and exit code 2, and nothing published (no broker here:
a check that let one through would fail to connect instead)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"
WORD_COUNT = EXAMPLES / "word_count.py"
ITEMS = EXAMPLES / "word_count_items.jsonl"


def marketctl_map(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # a broker nobody listens on: the command must stop before it would publish
    env = dict(os.environ, MARKET_AMQP_URL="amqp://nobody:x@127.0.0.1:9/", MARKET_HOME=str(tmp_path),
               MARKET_REQUEST_ATTEMPTS="1")
    return subprocess.run([sys.executable, "-m", "cli.main", "--as", "alice", "map", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


def common(target: str = f"{WORD_COUNT}:count", items: Path = ITEMS) -> list[str]:
    return [target, "--items", str(items), "--name", "words", "--price", "3.5"]


@pytest.mark.parametrize("case, extra, expected", [
    ("no entry", ["--chunk", "4"], "word_count.py has no function 'tally' (functions: count, merge)"),
    ("no reduce", ["--reduce", f"{WORD_COUNT}:sum_up"], "word_count.py has no function 'sum_up'"),
    ("chunk 0", ["--chunk", "0"], "--chunk must be at least 1"),
    ("negative failures", ["--allow-failures", "-1"], "--allow-failures must be 0 or more"),
])
def test_bad_arguments_are_one_clear_line_and_nothing_is_sent(tmp_path, case, extra, expected):
    target = f"{WORD_COUNT}:tally" if case == "no entry" else f"{WORD_COUNT}:count"
    done = marketctl_map(tmp_path, *common(target), *extra)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bad_items_are_one_clear_line(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('"a line"\n{broken\n')
    done = marketctl_map(tmp_path, *common(items=items))
    assert done.returncode == 2
    assert done.stderr.strip() == ("marketctl: items.jsonl line 2 is not JSON: Expecting property name enclosed in "
                                   "double quotes at column 2")


def test_a_map_over_the_message_limit_is_refused_before_it_is_sent(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps("word " * 2000) + "\n" for _ in range(500)))  # about 5 MB
    done = marketctl_map(tmp_path, *common(items=items), "--chunk", "50")
    assert done.returncode == 2
    assert "the map is" in done.stderr and "the limit is 4194304" in done.stderr, done.stderr


NEEDS_AN_ITEM = '''
def initial_state(args):  # a chunk never calls it: its states are its items
    return {"n": args["n"]}


def square(item):
    if item is None:
        raise ValueError("square needs an item")
    return item["n"] * item["n"]
'''


def map_needing_an_item(tmp_path: Path, items: str) -> subprocess.CompletedProcess:
    module = tmp_path / "needs_an_item.py"
    module.write_text(NEEDS_AN_ITEM)
    path = tmp_path / "items.jsonl"
    path.write_text(items)
    return marketctl_map(tmp_path, *common(f"{module}:square", path))


def test_an_entry_that_fails_on_none_but_works_on_items_passes_the_check(tmp_path):
    # Given a module whose initial_state and entry both fail on None, and items they work on
    # When
    done = map_needing_an_item(tmp_path, '{"n": 2}\n{"n": 3}\n')
    # Then every check passed: only the broker (nobody listens) stopped it
    assert done.returncode == 1 and "cannot reach the broker" in done.stderr, done.stderr


def test_an_entry_that_fails_on_its_first_item_is_one_clear_line_and_nothing_is_sent(tmp_path):
    # Given the same module, and a first item it cannot take
    # When
    done = map_needing_an_item(tmp_path, '7\n{"n": 3}\n')
    # Then
    assert done.returncode == 2
    assert done.stderr.strip() == ("marketctl: square(the first item of items.jsonl) failed: "
                                   "TypeError: 'int' object is not subscriptable")
