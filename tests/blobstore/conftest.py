"""The stores under test: the folder store, and the S3 store against moto's
standalone S3 server (a process of its own on a loopback port; MinIO's
server is not available here)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blobstore.fs import FolderStore

#: the store's credentials: the market's hosts hold them, a worker never does
S3_KEY, S3_SECRET = "market-store-key", "market-store-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, its URL; stopped at the end of the session."""
    moto_server = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if moto_server is None:
        pytest.fail("moto_server is missing: pip install 'moto[server]' (the test extras)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start (exit {process.poll()}); see {log.name}")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3_store(s3_server, monkeypatch):
    import uuid

    import boto3

    from blobstore.s3 import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"market-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return S3Store(bucket, prefix="test", endpoint_url=s3_server)


@pytest.fixture
def folder_store(tmp_path):
    return FolderStore(tmp_path / "blobs")


@pytest.fixture(params=["folder", "s3"])
def store(request):
    """Each test of the interface runs against both stores."""
    return request.getfixturevalue(f"{request.param}_store")


def write_file(path: Path, size: int, seed: int = 0) -> Path:
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path
