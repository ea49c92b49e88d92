"""A finished job's outputs/ as a bounded tar (sandbox.artifacts): what a hostile job leaves there does not
make the worker read its own files. Pure file-system work, no sandbox needed."""
import io
import os
import tarfile

from sandbox.artifacts import collect, members
from sandbox.live_output import LiveOutput


def outputs(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    return folder


def test_files_and_folders_come_back_as_a_tar_without_owner_or_time(tmp_path):
    folder = outputs(tmp_path)
    (folder / "a.txt").write_text("hello")
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "b.bin").write_bytes(b"\0\1\2")
    data, note = collect(str(tmp_path), 1 << 20)
    assert note is None
    assert sorted(members(data)) == [("a.txt", 5), ("deep/er/b.bin", 3)]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (0, 0, "", "", 0)


def test_no_outputs_folder_or_an_empty_one_means_no_artifacts(tmp_path):
    assert collect(str(tmp_path), 1 << 20) == (None, None)
    outputs(tmp_path)
    assert collect(str(tmp_path), 1 << 20) == (None, None)


def test_links_to_worker_files_hard_links_and_fifos_are_not_read(tmp_path):
    # Given a worker file the job must never get, and a job's outputs/ that points at it every way it can
    secret = tmp_path / "credentials"
    secret.write_text("the worker's key")
    folder = outputs(tmp_path)
    (folder / "fine.txt").write_text("ok")
    os.symlink(secret, folder / "link")
    os.link(secret, folder / "hard")
    os.mkfifo(folder / "pipe")
    (folder / "sub").mkdir()
    os.symlink(tmp_path, folder / "sub" / "up")
    # When the worker collects it
    data, note = collect(str(tmp_path), 1 << 20)
    # Then only the regular file comes back, the rest is named as skipped, and nothing blocked on the FIFO
    assert members(data) == [("fine.txt", 2)]
    assert b"the worker's key" not in data
    for name in ("link", "hard", "pipe", "sub/up"):
        assert name in note


def test_outputs_that_is_itself_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "outputs")
    data, note = collect(str(tmp_path), 1 << 20)
    assert data is None and "not a folder" in note


def test_more_than_the_limit_sends_nothing_and_says_so(tmp_path):
    folder = outputs(tmp_path)
    (folder / "big").write_bytes(b"x" * 5000)
    data, note = collect(str(tmp_path), 4096)
    assert data is None and "more than 4096 bytes" in note
    # a sparse file claiming a terabyte is judged by its size, never read
    with open(folder / "big", "wb") as sparse:
        sparse.truncate(1 << 40)
    assert collect(str(tmp_path), 1 << 20)[0] is None


def test_live_output_keeps_the_first_characters_up_to_its_limit_in_chunks():
    live = LiveOutput(10)
    live.add("héllo ".encode()[:2])  # a character cut between two reads
    live.add("héllo ".encode()[2:])
    assert live.take(4) == [(0, "héll"), (4, "o ")]
    live.add(b"world, and more")
    assert live.take(100) == [(6, "worl")] and live.capped
    live.add(b"ignored")
    assert live.take(100) == []
