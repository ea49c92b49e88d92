"""Issue 17: the portal's submit form takes input files; the job reads them
under inputs/ on a real worker."""
from __future__ import annotations

import hashlib
import uuid

import pytest


pytestmark = [pytest.mark.broker, pytest.mark.slow]

READER = b'''import hashlib, os
def read(state):
    return {name: hashlib.sha256(open(os.path.join("inputs", name), "rb").read()).hexdigest()
            for name in sorted(os.listdir("inputs"))}
'''


def post(member, files: list[tuple[str, bytes]], entry: str = "read"):
    return member.http.post("/submit", data={"csrf": member.csrf("/submit"), "entry": entry, "name": "reads inputs",
                                             "price": "3", "args": "", "max_attempts": "1"},
                            files=[("module", ("reader.py", READER, "text/x-python"))]
                            + [("inputs", (name, data, "application/octet-stream")) for name, data in files])


def test_a_job_submitted_with_two_input_files_on_the_form_reads_them(portal):
    # Given a member and two files of her own
    carol = portal.member("carol")
    table = f"a,b\n1,2\n# {uuid.uuid4()}\n".encode()
    blob = bytes(range(256)) * 4096 + uuid.uuid4().bytes
    # When she submits a module with both as input files
    page = post(carol, [("table.csv", table), ("blob.bin", blob)])
    assert page.status_code == 200 and "/jobs/" in str(page.url), page.text[-500:]
    job_id = page.url.path.rsplit("/", 1)[1]
    # Then the job runs on a worker and reads both, whole
    assert carol.wait_terminal(job_id)["status"] == "completed"
    assert carol.http.get(f"/jobs/{job_id}/result").json() == {
        "blob.bin": hashlib.sha256(blob).hexdigest(), "table.csv": hashlib.sha256(table).hexdigest()}


@pytest.mark.parametrize("files, status, says", [
    ([(".hidden", b"x")], 400, "file name must be"),
    ([("same.csv", b"1"), ("same.csv", b"2")], 400, "same name"),
])
def test_bad_input_files_are_refused_with_one_line_and_nothing_is_submitted(portal, files, status, says):
    dave = portal.member("dave")
    before = portal.event_count(dave.account)
    page = post(dave, files)
    assert page.status_code == status and says in page.text
    assert portal.event_count(dave.account) == before
