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
    """``get``/``put``/``post``/``delete`` on ``/api/...`` as one broker user.

    ``base_url`` may list several nodes of a cluster, comma-separated: a call
    that cannot reach one goes to the next, and the one that answered is
    asked first next time (any node of a cluster answers for all of it)."""

    def __init__(self, base_url: str, user: str, password: str):
        self.base_urls = [url.strip().rstrip("/") + "/api" for url in base_url.split(",") if url.strip()]
        self.user = user
        self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @classmethod
    def for_settings(cls, settings) -> "ManagementApi":
        """The local broker's API (any live node of a cluster) as the operator's service user."""
        return cls(settings.management_urls, settings.service_user, settings.service_secret)

    def get(self, path: str):
        return self.request("GET", path)

    def put(self, path: str, body) -> None:
        self.request("PUT", path, body)

    def post(self, path: str, body) -> None:
        self.request("POST", path, body)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    @property
    def base_url(self) -> str:
        """The node asked first."""
        return self.base_urls[0]

    def request(self, method: str, path: str, body=None):
        """Raises urllib.error.HTTPError on any status >= 400 (ManagementError when no node is reachable)."""
        data = None if body is None else json.dumps(body).encode()
        unreachable = []
        for base_url in list(self.base_urls):
            request = urllib.request.Request(base_url + path, data=data, method=method)
            request.add_header("Authorization", self.authorization)
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:
                    raw = response.read()
            except urllib.error.HTTPError:
                raise
            except OSError as e:
                unreachable.append(f"{base_url}: {e}")
                continue
            if base_url != self.base_urls[0]:
                self.base_urls.remove(base_url)
                self.base_urls.insert(0, base_url)
            return json.loads(raw) if raw else None
        raise ManagementError("cannot reach the management API at " + "; ".join(unreachable))

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
