"""Credentials files: a member's key or a worker's key, and where the broker is.

A credentials file is JSON, mode 0600: ``{"amqp_url": ..., "account": ...,
"worker_id": ...}`` (``worker_id`` only for a worker's key). It is written
once, where the key is made (``marketctl worker register``, ``marketctl
accounts open --credentials-out``, or the portal's download), and it is all
a member's ``marketctl`` or a worker on another machine needs.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from broker_setup.urls import first_url, map_urls
from common.errors import MarketError

#: where marketctl looks when neither --credentials nor MARKET_CREDENTIALS is given
DEFAULT_PATH = Path("~/.config/market/credentials")


class CredentialsError(MarketError):
    exit_code = 2


@dataclass(frozen=True)
class Credentials:
    amqp_url: str
    account: str
    worker_id: str | None = None
    #: the worker's name, as its owner registered it
    name: str | None = None
    #: the market's CA certificate (PEM), which an amqps:// broker is checked against
    ca_pem: str | None = None

    @property
    def user(self) -> str:
        from urllib.parse import unquote

        return unquote(urlsplit(first_url(self.amqp_url)).username or "")

    def as_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=2) + "\n"

    def save(self, path: Path) -> Path:
        """Write the file (mode 0600; its folder 0700 when we make it). Never overwrites."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as e:
            raise CredentialsError(f"{path} already exists: remove it or give another path") from e
        with os.fdopen(fd, "w") as file:
            file.write(self.as_json())
        return path

    @classmethod
    def load(cls, path) -> "Credentials":
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text())
            return cls(amqp_url=str(data["amqp_url"]), account=str(data["account"]),
                       worker_id=data.get("worker_id"), name=data.get("name"), ca_pem=data.get("ca_pem"))
        except FileNotFoundError as e:
            raise CredentialsError(f"no credentials file at {path}") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CredentialsError(f"{path} is not a market credentials file ({e.__class__.__name__}: {e})") from e


def url_with_key(base_url: str, user: str, secret: str) -> str:
    """``base_url`` (the broker as members reach it; a cluster's nodes comma-separated)
    with ``user:secret@`` in each URL."""
    return map_urls(base_url, lambda url: _one_url_with_key(url, user, secret))


def _one_url_with_key(base_url: str, user: str, secret: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def public_amqp_url(settings) -> str:
    """The broker as a member or a worker reaches it (no user in it): MARKET_PUBLIC_AMQP_URL,
    else the local node's TLS listener, else its loopback AMQP port."""
    if settings.public_amqp_url:
        return settings.public_amqp_url
    # every node of a local cluster, so a member's client moves on when one is down
    steps = [port - settings.amqp_port for port in settings.local_amqp_ports] if settings.uses_local_broker else [0]
    if settings.uses_local_broker and settings.amqps_port:
        return ",".join(f"amqps://localhost:{settings.amqps_port + step}/" for step in steps)
    return ",".join(f"amqp://127.0.0.1:{settings.amqp_port + step}/" for step in steps)


def public_ca_pem(settings) -> str | None:
    """The CA certificate handed out with credentials: the local node's, or MARKET_AMQP_CA."""
    if settings.amqp_ca_pem:
        return settings.amqp_ca_pem
    if settings.uses_local_broker and settings.amqps_port:
        from broker_setup.node import LocalNode

        path = LocalNode(settings).tls.ca_cert
        return path.read_text() if path.exists() else None
    return None


def settings_for(settings, credentials: "Credentials"):
    """``settings`` connecting with ``credentials`` (its URL, and its CA for amqps)."""
    return settings.replace(amqp_url_override=credentials.amqp_url,
                            amqp_ca_pem=credentials.ca_pem or settings.amqp_ca_pem)


def find(settings, explicit: str | None) -> Credentials | None:
    """The credentials marketctl runs with: --credentials, else MARKET_CREDENTIALS,
    else the default file if it exists, else None (the operator's own tools)."""
    path = explicit or settings.credentials_file
    if path:
        return Credentials.load(path)
    default = DEFAULT_PATH.expanduser()
    return Credentials.load(default) if default.exists() else None
