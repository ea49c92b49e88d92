"""The local node's TLS: a certificate authority of the market's own and the node's certificate.

``marketctl up`` makes both once (openssl, under ``MARKET_HOME/rabbitmq/tls``)
and opens an amqps listener; members and workers off the market's host
connect over it and verify the broker against the CA, whose certificate
their credentials files carry. Plain AMQP listens on loopback only.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
import subprocess
from pathlib import Path

from broker_setup.errors import NodeError

#: days the CA and the node's certificate are valid
VALID_DAYS = 3650
#: names every node certificate holds besides MARKET_TLS_HOSTS
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


class Tls:
    """The files of one node's TLS, in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    def ensure(self, hosts: tuple[str, ...]) -> None:
        """Make the CA (once) and a node certificate for ``hosts`` (again when the hosts change)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        names = tuple(dict.fromkeys(DEFAULT_HOSTS + tuple(h for h in hosts if h)))
        if not self.ca_cert.exists():
            self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", str(self.folder / "ca.key"), "-out", str(self.ca_cert),
                          "-days", str(VALID_DAYS), "-subj", "/CN=compute market local CA",
                          "-addext", "basicConstraints=critical,CA:TRUE",
                          "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        hosts_file = self.folder / "server.hosts"
        if self.cert.exists() and hosts_file.exists() and hosts_file.read_text() == ",".join(names):
            return
        request = self.folder / "server.csr"
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", str(self.key), "-out", str(request), "-subj", "/CN=compute market broker")
        extensions = self.folder / "server.ext"
        extensions.write_text("subjectAltName=" + ",".join(_san(name) for name in names) + "\n"
                              "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        self._openssl("x509", "-req", "-in", str(request), "-CA", str(self.ca_cert),
                      "-CAkey", str(self.folder / "ca.key"), "-CAcreateserial", "-out", str(self.cert),
                      "-days", str(VALID_DAYS), "-extfile", str(extensions))
        for path in (self.key, self.folder / "ca.key"):
            os.chmod(path, 0o600)
        hosts_file.write_text(",".join(names))

    def _openssl(self, *args: str) -> None:
        try:
            result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        except FileNotFoundError as e:
            raise NodeError("openssl is not installed: apt-get install openssl") from e
        if result.returncode != 0:
            raise NodeError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def _san(name: str) -> str:
    try:
        ipaddress.ip_address(name)
        return f"IP:{name}"
    except ValueError:
        return f"DNS:{name}"


def client_context(ca_pem: str) -> ssl.SSLContext:
    """A client's TLS context that trusts only the market's CA (and checks the broker's name)."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
