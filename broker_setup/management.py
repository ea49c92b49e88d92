"""A small client of RabbitMQ's management HTTP API (``/api/...``, JSON in and out).

The operator's tools and the gatekeeper use it to manage broker users; the
tests use it to look at queues. Standard library only: it runs rarely.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote

from broker_setup.errors import BrokerError

#: seconds one API call may take
API_TIMEOUT = 30


class ManagementError(BrokerError):
    """The management API refused a call or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ManagementApi:
    """``get``/``put``/``post``/``delete`` on ``/api/...`` as one broker user."""

    def __init__(self, base_url: str, user: str, password: str):
        self.base_url = base_url.rstrip("/") + "/api"
        self.user = user
        self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @classmethod
    def for_settings(cls, settings) -> "ManagementApi":
        """The local node's API as the operator's service user."""
        return cls(settings.management_url, settings.service_user, settings.service_secret)

    def get(self, path: str):
        return self.request("GET", path)

    def put(self, path: str, body) -> None:
        self.request("PUT", path, body)

    def post(self, path: str, body) -> None:
        self.request("POST", path, body)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def request(self, method: str, path: str, body=None):
        """Raises urllib.error.HTTPError on any status >= 400 (ManagementError when unreachable)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", self.authorization)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError:
            raise
        except OSError as e:
            raise ManagementError(f"cannot reach the management API at {self.base_url}: {e}") from e
        return json.loads(raw) if raw else None

    def delete_if_present(self, path: str) -> bool:
        """DELETE; False (not an error) when there was nothing to delete."""
        try:
            self.delete(path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise
        return True

    @staticmethod
    def quote(name: str) -> str:
        """A vhost, queue or user name as one path segment (``/`` becomes ``%2F``)."""
        return quote(name, safe="")
