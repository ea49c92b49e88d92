"""The job package format: state and result blobs, stable module names, build errors."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contracts.package import (
    DILL_TAG, JSON_TAG, PICKLE_TAG, BuiltPackage, EntryNotCallable, EntryNotFound, InvalidBlob,
    InvalidSource, InvalidTarget, PackageError, PackageTooLarge, ResultNotJSON, SourceNotFound,
    StateNotSerializable, build_package, dumps_result, dumps_state, load_module, loads_state,
    module_name, parse_target, result_as_json,
)

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "examples" / "jobs"


def write_module(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- states ------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, 0, {"items": [3, 1, 2], "passes": 1}, (1, "a", b"x"), {1, 2}, 2**100])
def test_plain_data_round_trips_through_pickle(state):
    # Given plain Python data
    # When it is dumped
    data = dumps_state(state)

    # Then plain pickle was used, and it loads back equal
    assert data[:1] == PICKLE_TAG
    assert loads_state(data) == state


def test_a_lambda_falls_back_to_dill():
    # Given a state that plain pickle refuses: a lambda with a closure
    offset = 10
    state = {"function": lambda x: x + offset}

    # When it is dumped and loaded
    data = dumps_state(state)
    loaded = loads_state(data)

    # Then dill was used and the function still works
    assert data[:1] == DILL_TAG
    assert loaded["function"](1) == 11


def test_an_unserializable_state_is_one_clear_line():
    # Given a state neither pickle nor dill can serialize
    generator = (x for x in range(3))

    # When it is dumped, Then the error says so in one line
    with pytest.raises(StateNotSerializable, match=r"^the state cannot be serialized: cannot pickle 'generator'"):
        dumps_state(generator)


@pytest.mark.parametrize("blob", [b"", b"X123", PICKLE_TAG + b"not a pickle"])
def test_a_corrupt_blob_is_refused(blob):
    # Given an empty, unknown-format or corrupt blob
    # When it is loaded, Then it is a PackageError
    with pytest.raises(InvalidBlob):
        loads_state(blob)


# -- results -----------------------------------------------------------------


@pytest.mark.parametrize("result", [
    None, True, 3, -2.5, "text", [1, [2, None]], {"pi": 3.14159, "factors": [71, 839], "ok": False},
    2**100, "\ud800",  # beyond orjson: written exactly by the stdlib
])
def test_plain_json_results_are_json(result):
    # Given a result made only of exact JSON types
    # When it is dumped
    data = dumps_result(result)

    # Then it is a JSON blob that reads back equal without unpickling
    assert data[:1] == JSON_TAG
    assert result_as_json(data) == result


@pytest.mark.parametrize("result", [
    (1, 2), {1: "int key"}, [1, (2, 3)], float("nan"), float("inf"), b"bytes", {"a": {1, 2}},
])
def test_other_results_are_pickled_and_not_readable_as_json(result):
    # Given a result that JSON would change (tuple -> list, int keys -> str, NaN -> null) or cannot hold
    # When it is dumped
    data = dumps_result(result)

    # Then it is pickled, a sandbox reads it back exactly, and result_as_json refuses it
    assert data[:1] == PICKLE_TAG
    loaded = loads_state(data)
    assert loaded == result or (result != result and loaded != loaded)  # NaN is not equal to itself
    with pytest.raises(ResultNotJSON, match=r"^the result is a pickled Python object; download it with --raw$"):
        result_as_json(data)


def test_result_as_json_never_unpickles_a_dill_blob():
    # Given a dill-pickled result
    data = dumps_result(lambda: 1)
    assert data[:1] == DILL_TAG

    # When it is read as JSON, Then it is refused
    with pytest.raises(ResultNotJSON):
        result_as_json(data)


def test_a_deeply_nested_result_is_pickled_rather_than_lost():
    # Given a list nested deeper than the JSON writer goes
    result: list = []
    for _ in range(300):
        result = [result]

    # When it is dumped, Then it is pickled
    assert dumps_result(result)[:1] == PICKLE_TAG


# -- modules -----------------------------------------------------------------


def test_the_module_name_is_stable_and_short():
    # Given a sha256
    sha = hashlib.sha256(b"source").hexdigest()

    # When the module name is derived, Then it is the prefix and 16 hex digits
    assert module_name(sha) == "market_job_" + sha[:16]
    with pytest.raises(InvalidBlob):
        module_name("not-a-sha")


def test_load_module_registers_the_module_under_its_stable_name():
    # Given a module source with a dataclass (which needs its module in sys.modules)
    source = b"from dataclasses import dataclass\n@dataclass\nclass Point:\n    x: int\n"
    sha = hashlib.sha256(source).hexdigest()

    # When it is loaded
    module = load_module(source, sha)

    # Then it is registered, and its class belongs to the stable name
    assert sys.modules[module_name(sha)] is module
    assert module.Point.__module__ == module_name(sha)
    assert module.Point(1).x == 1


def test_load_module_refuses_a_source_that_does_not_match_its_sha():
    # Given a source and somebody else's sha
    # When it is loaded, Then it is refused
    with pytest.raises(InvalidBlob, match="does not hash"):
        load_module(b"x = 1\n", hashlib.sha256(b"x = 2\n").hexdigest())


def test_a_class_from_the_module_survives_into_another_process(tmp_path):
    # Given a package whose initial state is an instance of a class defined in the module
    path = write_module(tmp_path, """
        from dataclasses import dataclass, field

        @dataclass
        class Counter:
            count: int
            seen: list = field(default_factory=list)

        def initial_state(args):
            return Counter(args["start"], ["a"])

        def run(counter):
            yield counter
    """)
    package = build_package(path, "run", {"start": 41})
    assert package.state[:1] == PICKLE_TAG  # by reference to market_job_<sha>.Counter, not by value

    # When another process loads the module under its stable name and then the state
    program = textwrap.dedent("""
        import base64, sys
        from contracts.package import load_module, loads_state
        source, sha, state = sys.stdin.read().split()
        load_module(base64.b64decode(source), sha)
        counter = loads_state(base64.b64decode(state))
        print(type(counter).__module__, type(counter).__name__, counter.count, counter.seen)
    """)
    given = " ".join([base64.b64encode(package.module_source).decode(), package.module_sha256,
                      base64.b64encode(package.state).decode()])
    done = subprocess.run([sys.executable, "-c", program], input=given, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)

    # Then the object is back, with its class from the module
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [module_name(package.module_sha256), "Counter", "41", "['a']"]


# -- building a package ------------------------------------------------------


def test_build_package_of_an_example():
    # Given the bubble sort example and its arguments
    # When it is packaged
    package = build_package(JOBS / "bubble_sort.py", "sort", {"items": [5, 3, 9, 1, 7]})

    # Then the package carries the source, its sha, the entry, the kind and the state
    assert isinstance(package, BuiltPackage)
    assert package.module_source == (JOBS / "bubble_sort.py").read_bytes()
    assert package.module_sha256 == hashlib.sha256(package.module_source).hexdigest()
    assert (package.entry, package.kind) == ("sort", "generator")
    assert loads_state(package.state) == {"items": [5, 3, 9, 1, 7]}


def test_build_package_of_a_plain_function_uses_initial_state(tmp_path):
    # Given a module with a plain function and an initial_state
    path = write_module(tmp_path, """
        def initial_state(args):
            return {"numbers": list(range(args["n"]))}

        def total(state):
            return sum(state["numbers"])
    """)

    # When it is packaged
    package = build_package(path, "total", {"n": 4})

    # Then it is a function job whose state came from initial_state
    assert package.kind == "function"
    assert loads_state(package.state) == {"numbers": [0, 1, 2, 3]}


def test_a_missing_file_is_named():
    # Given a path with no file
    # When it is packaged, Then the error names the path
    with pytest.raises(SourceNotFound, match=r"^examples/jobs/x\.py: no such file$"):
        build_package("examples/jobs/x.py", "run")


def test_a_syntax_error_gives_its_line(tmp_path):
    # Given a module with a syntax error on line 3
    path = write_module(tmp_path, "def run(state):\n    return 1\ndef broken(:\n", "x.py")

    # When it is packaged, Then the error says the file and the line
    with pytest.raises(InvalidSource, match=r"^x\.py line 3: invalid syntax"):
        build_package(path, "run")


def test_a_module_that_fails_while_loading(tmp_path):
    # Given a module that raises at import time
    path = write_module(tmp_path, "x = 1\ny = x / 0\n", "x.py")

    # When it is packaged, Then the error gives the exception and its line
    with pytest.raises(InvalidSource, match=r"^x\.py failed to load \(line 2\): ZeroDivisionError: division by zero$"):
        build_package(path, "run")


def test_a_missing_entry_lists_the_functions(tmp_path):
    # Given a module with two functions (and an initial_state, which is not an entry)
    path = write_module(tmp_path, """
        def sort(state): return state
        def merge(state): return state
        def initial_state(args): return args
        def _helper(): pass
    """, "x.py")

    # When it is packaged with a misspelt entry, Then the error lists what there is
    with pytest.raises(EntryNotFound, match=r"^x\.py has no function 'sortt' \(functions: merge, sort\)$"):
        build_package(path, "sortt")


def test_an_entry_that_is_not_callable(tmp_path):
    # Given a module where "data" is a list
    path = write_module(tmp_path, "data = [1, 2]\n", "x.py")

    # When it is packaged with "data" as its entry, Then the error says it is not callable
    with pytest.raises(EntryNotCallable, match=r"^'data' in x\.py is not callable$"):
        build_package(path, "data")


def test_an_unserializable_initial_state(tmp_path):
    # Given a module whose initial state holds a running generator (even dill cannot)
    path = write_module(tmp_path, """
        def initial_state(args): return {"numbers": (n for n in range(3))}
        def run(state): return 1
    """)

    # When it is packaged, Then the error says the initial state cannot be serialized
    with pytest.raises(StateNotSerializable, match=r"^the initial state cannot be serialized: cannot pickle 'generator' object$"):
        build_package(path, "run")


def test_a_package_over_the_limit(tmp_path):
    # Given a module and arguments of 5.1 MB
    path = write_module(tmp_path, "def run(state): return len(state)\n")
    args = "x" * int(5.1 * 2**20)

    # When it is packaged under the 4 MB default, Then the error gives both sizes
    with pytest.raises(PackageTooLarge, match=r"^package is 5\.1 MB; the limit is 4 MB "
                                              r"\(its module and initial state: give large data as --input files\)$"):
        build_package(path, "run", args)


def test_package_errors_are_market_errors_with_exit_code_2(tmp_path):
    # Given any package error
    with pytest.raises(PackageError) as caught:
        build_package(tmp_path / "nothing.py", "run")

    # Then the command line exits with 2 and shows one line
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_parse_target():
    # Given targets with and without an entry
    # When they are parsed, Then the path and the entry come apart, or the error shows the form
    assert parse_target("examples/jobs/bubble_sort.py:sort") == (Path("examples/jobs/bubble_sort.py"), "sort")
    with pytest.raises(InvalidTarget, match=r"write path\.py:function"):
        parse_target("examples/jobs/bubble_sort.py")
    with pytest.raises(InvalidTarget, match="not a function name"):
        parse_target("x.py:not a name")
