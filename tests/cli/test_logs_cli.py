"""marketctl logs' follower and result --artifacts' writer: pure, no market."""
import io
import tarfile

import pytest

from cli.logs import Follower, LogsError, write_artifacts


def lease(lease_id, outcome="checkpointed", output="", shown=True, **more):
    return {"lease_id": lease_id, "worker_id": "w1", "outcome": outcome, "executed_ms": 1500, "output": output,
            "shown": shown, "error": None, "exit_code": None, "exit": None, **more}


def answer(leases, live=None, status="leased", reason=None):
    return {"job_id": "j1", "status": status, "reason": reason, "leases": leases, "live": live}


def test_a_follower_prints_the_stream_once_then_the_rest_of_the_kept_output_and_the_end():
    out = io.StringIO()
    follower = Follower(out)
    follower.show(answer([lease("L1", output="a\n")], {"lease_id": "L2", "worker_id": "w1", "text": "b\n",
                                                        "next": 7, "capped": False}))
    follower.show(answer([lease("L1", output="a\n")], {"lease_id": "L2", "worker_id": "w1", "text": "c\n",
                                                        "next": 9, "capped": False}))
    assert follower.after == 9
    # the lease ends: its kept output holds one more line the stream had not sent
    follower.show(answer([lease("L1", output="a\n"), lease("L2", "finished", "b\nc\nd\n")], status="completed"))
    follower.show(answer([lease("L1", output="a\n"), lease("L2", "finished", "b\nc\nd\n")], status="completed"))
    text = out.getvalue()
    assert text.count("a\n") == 1 and text.count("b\n") == 1 and text.count("d\n") == 1
    assert text.index("a\n") < text.index("b\n") < text.index("c\n") < text.index("d\n")
    assert text.endswith("== job j1 completed ==\n")


def test_an_unpaid_lease_shows_nothing_kept_and_an_errored_one_its_exit_and_traceback():
    out = io.StringIO()
    Follower(out).show(answer([lease("L1", "expired", shown=False),
                               lease("L2", "errored", "oops\n", error="Traceback\nValueError: x", exit_code=-9,
                                     exit="killed by signal 9 (SIGKILL)")],
                              status="failed", reason="errored 1 times"))
    text = out.getvalue()
    assert "[no output kept: the lease ended expired, unpaid]" in text
    assert "errored, killed by signal 9 (SIGKILL)" in text and "ValueError: x" in text
    assert "== job j1 failed: errored 1 times ==" in text


def a_tar(*files) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_artifacts_are_written_inside_the_folder_and_never_overwrite(tmp_path):
    written = write_artifacts(a_tar(("a.txt", b"1"), ("sub/b.txt", b"22")), str(tmp_path / "out"))
    assert [(p.split("/out/")[1], n) for p, n in written] == [("a.txt", 1), ("sub/b.txt", 2)]
    with pytest.raises(LogsError, match="exists already"):
        write_artifacts(a_tar(("a.txt", b"again")), str(tmp_path / "out"))
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"1"


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "sub/../../escape.txt"])
def test_an_artifact_named_outside_the_folder_is_refused(tmp_path, name):
    with pytest.raises(LogsError, match="outside the folder"):
        write_artifacts(a_tar((name, b"x")), str(tmp_path / "out"))
    assert not (tmp_path / "escape.txt").exists()
