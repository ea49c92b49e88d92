"""Secrets the market's own host keeps for its services: random, made once,
readable by nobody else (``MARKET_HOME/secrets``, mode 0700, files 0600)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

#: random bytes in a service secret (256 bits)
SECRET_BYTES = 32


def secrets_dir(home: Path) -> Path:
    return Path(home) / "secrets"


def read_or_create(home: Path, name: str) -> str:
    """The secret ``name`` of this MARKET_HOME, made (at random) the first time it is asked for."""
    folder = secrets_dir(home)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(SECRET_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()  # another process made it first
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
    return value
