"""``marketctl login``: a member's own key, made by the portal after the member's password.

It logs in to the portal as a browser would (the log-in form, its CSRF
token and session cookie), asks for a new key (the password again) and
writes the credentials file the portal answers with (mode 0600).
"""
from __future__ import annotations

import getpass
import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cli.credentials import DEFAULT_PATH, Credentials, CredentialsError
from common.errors import MarketError

#: seconds one request to the portal may take
PORTAL_TIMEOUT = 30


class LoginError(MarketError):
    exit_code = 1


def login(portal_url: str, account: str, password: str) -> Credentials:
    """A new key of ``account`` from the portal at ``portal_url``; LoginError with the portal's reason."""
    base = portal_url.rstrip("/")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = _post(opener, base, "/login", {"account": account, "password": password}, form_page="/login")
    if "/login" in page.url:
        raise LoginError(f"the portal refused the log-in of {account}: {_error_of(page.text)}")
    answer = _post(opener, base, "/key", {"password": password}, form_page="/key")
    try:
        data = json.loads(answer.text)
        return Credentials(amqp_url=data["amqp_url"], account=data["account"], ca_pem=data.get("ca_pem"))
    except (ValueError, KeyError) as e:
        raise LoginError(f"the portal did not answer with credentials: {_error_of(answer.text)}") from e


class _Page:
    def __init__(self, url: str, text: str):
        self.url, self.text = url, text


def _post(opener, base: str, path: str, fields: dict, form_page: str) -> _Page:
    form = _fetch(opener, base + form_page)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if token is None:
        raise LoginError(f"{base}{form_page} is not the market's portal (no form there)")
    body = urllib.parse.urlencode({"csrf": token.group(1), **fields}).encode()
    return _fetch(opener, base + path, body)


def _fetch(opener, url: str, body: bytes | None = None) -> _Page:
    try:
        with opener.open(urllib.request.Request(url, data=body), timeout=PORTAL_TIMEOUT) as response:
            return _Page(response.geturl(), response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        return _Page(url, e.read().decode("utf-8", "replace"))
    except OSError as e:
        raise LoginError(f"cannot reach the portal at {url}: {e}") from e


def _error_of(html: str) -> str:
    found = re.search(r'class="flash error"[^>]*>([^<]+)<', html)
    return found.group(1).strip() if found else "no reason given"


def cmd_login(settings, args) -> int:
    path = Path(args.output or DEFAULT_PATH).expanduser()
    if path.exists():
        raise CredentialsError(f"{path} already exists: remove it first, or give --output")
    password = getpass.getpass(f"password of {args.name} at {args.portal}: ") if sys.stdin.isatty() \
        else sys.stdin.readline().rstrip("\n")
    credentials = login(args.portal, args.name, password)
    credentials.save(path)
    print(f"logged in as {credentials.account}: your key is in {path}; marketctl uses it from now on")
    return 0


def register(commands, command) -> None:
    sub = command("login", cmd_login, "get a key of your own from the portal (your password; it is read from "
                  "standard input when that is not a terminal) and write your credentials file")
    sub.add_argument("name", metavar="ACCOUNT", help="your account on the portal")
    sub.add_argument("--portal", required=True, help="the portal's address, e.g. https://market.example.org")
    sub.add_argument("-o", "--output", help=f"where to write the credentials (default {DEFAULT_PATH})")
