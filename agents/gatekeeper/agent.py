"""The gatekeeper agent: makes the broker's users agree with the ledger's identities.

Every member's key and every worker's key is a broker user of its own (see
contracts.identity); the ledger records each key's hash and whether it is
enabled. The gatekeeper reads every identity from the ledger when it starts
(the ``identities`` query), makes the broker agree (RabbitMQ's management
API: users with those password hashes and the permissions of
broker_setup.permissions; each worker's lease queue), then follows
``identity.changed`` from its quorum queue. A disabled key's broker user is
deleted, which closes its connections at once.

It holds the only credential besides the operator's that manages broker
users, so it runs on the market's own host.
"""
from __future__ import annotations

import asyncio
import urllib.error
from urllib.parse import unquote, urlsplit

import orjson
import structlog

from agents.gatekeeper.plan import Key, reconcile
from broker_setup import permissions
from broker_setup.amqp import run_sessions
from broker_setup.declare import declare_lease_queue
from broker_setup.management import ManagementApi
from broker_setup.rpc import Requester
from broker_setup.topology import GATEKEEPER_INBOX
from common.agent_main import run_agent
from contracts.identity import HASHING_ALGORITHM
from contracts.routing import GATEKEEPER_ACTOR, LEDGER_ACTOR

log = structlog.get_logger("gatekeeper")

RECONNECT_DELAY = 1.0


class Gatekeeper:
    def __init__(self, settings, api: ManagementApi):
        self.settings = settings
        self.api = api

    async def run(self, stop: asyncio.Event) -> None:
        # a session that fails starts over, and the next one reconciles everything
        await run_sessions(self.settings, "gatekeeper", lambda connection: self._session(connection, stop), stop,
                           delay=RECONNECT_DELAY)

    async def _session(self, connection, stop: asyncio.Event) -> None:
        channel = await connection.channel()
        failed = asyncio.Event()
        async with Requester(connection) as requester:
            rows = await requester.ask("identities", user_id=GATEKEEPER_ACTOR, timeout=self.settings.reply_timeout)
        await self.reconcile_all(channel, [Key.from_payload(row) for row in rows])
        queue = await channel.declare_queue(GATEKEEPER_INBOX, passive=True)

        async def on_message(message) -> None:
            try:
                async with message.process(requeue=True):
                    await self._on_changed(channel, message)
            except Exception as e:  # noqa: BLE001 - end the session; the next one reconciles all
                log.warning("gatekeeper.apply_failed", reason=repr(e))
                failed.set()

        await queue.consume(on_message)
        log.info("gatekeeper.following", queue=GATEKEEPER_INBOX, keys=len(rows))
        stop_wait = asyncio.ensure_future(stop.wait())
        failed_wait = asyncio.ensure_future(failed.wait())
        closed = asyncio.get_running_loop().create_future()
        connection.close_callbacks.add(lambda *_: closed.done() or closed.set_result(None))
        try:
            await asyncio.wait([stop_wait, failed_wait, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            failed_wait.cancel()
        if failed.is_set():
            raise RuntimeError("an identity change could not be applied")

    async def _on_changed(self, channel, message) -> None:
        if message.user_id != LEDGER_ACTOR:
            log.warning("gatekeeper.not_from_ledger", user_id=message.user_id)
            return  # acked and ignored: only the ledger's verdicts count
        key = Key.from_payload(orjson.loads(message.body)["payload"])
        await self.apply(channel, key, rotate=True)

    async def reconcile_all(self, channel, keys: list[Key]) -> None:
        users = await asyncio.to_thread(self.api.get, "/users")
        plan = reconcile(keys, users)
        for name in plan.delete:
            await asyncio.to_thread(self._delete_user, name)
        for key in plan.put:
            await self.apply(channel, key, rotate=False)
        log.info("gatekeeper.reconciled", users=len(plan.put), deleted=len(plan.delete))

    async def apply(self, channel, key: Key, *, rotate: bool) -> None:
        """Make one key's broker user what the ledger says."""
        if not key.active:
            await asyncio.to_thread(self._delete_user, key.name)
            return
        if key.kind == "worker":
            # before the user exists: its first consume must find the queue
            await declare_lease_queue(channel, self.settings, key.worker_id)
        await asyncio.to_thread(self._put_user, key, rotate)

    def _put_user(self, key: Key, rotate: bool) -> None:
        quoted = self.api.quote(key.name)
        existing = self._user(key.name)
        if rotate and existing is not None and existing.get("password_hash") != key.key_hash:
            # a new key: connections made with the old one must not live on
            self._close_connections(key.name)
        rights = key.permissions
        tags = ",".join(rights.tags)
        if existing is None:
            # a new user gets its rights before its key: created without a password (no
            # log-in possible), so no connection ever sees the user without its permissions
            self.api.put(f"/users/{quoted}", {"password_hash": "", "tags": tags})
        permissions.apply(self.api, key.name, rights)
        self.api.put(f"/users/{quoted}", {"password_hash": key.key_hash, "hashing_algorithm": HASHING_ALGORITHM,
                                          "tags": tags})
        log.info("gatekeeper.key_active", user=key.name, kind=key.kind, account=key.account)

    def _user(self, name: str) -> dict | None:
        try:
            return self.api.get(f"/users/{self.api.quote(name)}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def _close_connections(self, user: str) -> None:
        for connection in self.api.get("/connections") or []:
            if connection.get("user") == user:
                self.api.delete_if_present(f"/connections/{self.api.quote(connection['name'])}")

    def _delete_user(self, name: str) -> None:
        # deleting a user closes its connections (CONNECTION_FORCED), at once
        if self.api.delete_if_present(f"/users/{self.api.quote(name)}"):
            log.info("gatekeeper.key_removed", user=name)


def management_api(settings) -> ManagementApi:
    """The management API as the user of the gatekeeper's own AMQP URL."""
    parts = urlsplit(settings.amqp_url)
    return ManagementApi(settings.management_urls, unquote(parts.username or ""), unquote(parts.password or ""))


async def serve(settings, stop: asyncio.Event) -> None:
    await Gatekeeper(settings, management_api(settings)).run(stop)


def main() -> None:
    run_agent(serve)


if __name__ == "__main__":
    main()
