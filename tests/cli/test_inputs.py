"""`marketctl submit --input`: the files are checked before anything is
uploaded or published; a bad one is one line and exit code 2 (no broker)."""
from __future__ import annotations

import pytest

from cli.inputs import InputError, check_input_files
from common.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env(environ={"MARKET_HOME": str(tmp_path / "home"), "MARKET_MAX_INPUT_BYTES": "100"})


def test_good_files_are_named_by_their_base_name(settings, tmp_path):
    # Given two files
    (tmp_path / "data.csv").write_bytes(b"a,b\n")
    (tmp_path / "copy.csv").write_bytes(b"a,b\n")
    # When
    named = check_input_files(settings, [str(tmp_path / "data.csv"), str(tmp_path / "copy.csv")])
    # Then (uploading them, through the ledger's grants, is tests/e2e/test_inputs.py's)
    assert named == [("data.csv", str(tmp_path / "data.csv")), ("copy.csv", str(tmp_path / "copy.csv"))]


@pytest.mark.parametrize("setup, says", [
    (lambda d: d / "missing.csv", "No such file"),
    (lambda d: (d / "big.bin").write_bytes(b"x" * 101) and d / "big.bin", "is 101 bytes; the limit is 100"),
    (lambda d: (d / ".hidden").write_bytes(b"x") and d / ".hidden", "file name must be"),
    (lambda d: (d / "folder").mkdir() or d / "folder", "not a regular file"),
])
def test_a_bad_file_is_refused_with_one_line_before_any_upload(settings, tmp_path, setup, says):
    path = setup(tmp_path)
    with pytest.raises(InputError) as caught:
        check_input_files(settings, [str(path)])
    assert says in str(caught.value) and "\n" not in str(caught.value) and caught.value.exit_code == 2
    assert not (tmp_path / "home" / "blobs").exists()


def test_two_files_with_the_same_name_are_refused(settings, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.csv").write_bytes(b"1")
    with pytest.raises(InputError, match="another input is named data.csv"):
        check_input_files(settings, [str(tmp_path / "a" / "data.csv"), str(tmp_path / "b" / "data.csv")])
