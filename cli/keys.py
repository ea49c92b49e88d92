"""Keys: ``marketctl worker register|revoke`` and ``accounts disable|key``.

A key is made here, where it is shown: the secret goes into a credentials
file (mode 0600) and only its hash (contracts.identity.key_hash) into the
request, so the ledger and the broker never see the secret itself.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from cli.credentials import Credentials, CredentialsError, public_amqp_url, public_ca_pem, url_with_key
from cli.jobs import UsageError
from contracts.identity import key_hash, new_secret, worker_principal

#: where `worker register` writes a worker's credentials unless told otherwise
WORKERS_DIR = Path("~/.config/market/workers")


def new_worker_id(name: str) -> str:
    """A worker id from its name and 6 random hex digits (ids are global: a random part avoids collisions)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "worker"
    return f"{slug}-{secrets.token_hex(3)}"


def register_worker(settings, account: str, name: str, worker_id: str | None, slots: int, lease_seconds: int,
                    out) -> tuple[Credentials, Path]:
    """Register a worker of ``account`` with a new key; returns its credentials and where they were
    written (``out`` False: nowhere, the caller keeps them in memory)."""
    from cli.requests import send_and_check

    worker_id = worker_id or new_worker_id(name)
    path = Path(out or WORKERS_DIR / f"{worker_id}.json").expanduser()
    if out is not False and path.exists():
        raise CredentialsError(f"{path} already exists: remove it or give another --output")
    secret = new_secret()
    send_and_check(settings, account, "worker.registered",
                   {"worker_id": worker_id, "name": name, "slots": slots, "lease_seconds": lease_seconds,
                    "key_hash": key_hash(secret)})
    credentials = Credentials(url_with_key(public_amqp_url(settings), worker_principal(worker_id), secret),
                              account, worker_id, name, public_ca_pem(settings))
    return credentials, credentials.save(path) if out is not False else path


def cmd_worker_register(settings, args) -> int:
    if args.slots < 1 or args.lease_seconds < 5:
        raise UsageError("--slots must be at least 1 and --lease-seconds at least 5")
    credentials, path = register_worker(settings, args.account, args.name, args.id, args.slots,
                                        args.lease_seconds, args.output)
    if args.json:
        print(json.dumps({"worker_id": credentials.worker_id, "amqp_url": credentials.amqp_url,
                          "credentials_file": str(path)}))
    else:
        print(f"worker {credentials.worker_id} registered; its key is in {path} (keep it secret: it is shown once)\n"
              f"run it with:  marketctl worker run --credentials {path}")
    return 0


def cmd_worker_revoke(settings, args) -> int:
    from cli.requests import send_and_check

    reply = send_and_check(settings, args.account, "worker.revoked", {"worker_id": args.worker_id})
    print(f"worker {args.worker_id} revoked: its key no longer connects (ledger sequence {reply['seq']})")
    return 0


def cmd_accounts_disable(settings, args) -> int:
    from cli.requests import send_and_check

    reply = send_and_check(settings, args.account, "account.disabled", {"account": args.name, "reason": args.reason})
    print(f"account {args.name} disabled: its keys and its workers' keys no longer connect "
          f"(ledger sequence {reply['seq']})")
    return 0


def member_key(settings, account: str) -> tuple[str, Credentials]:
    """A new member key for ``account``: (its hash for the request, the credentials to save)."""
    secret = new_secret()
    return key_hash(secret), Credentials(url_with_key(public_amqp_url(settings), account, secret), account,
                                         ca_pem=public_ca_pem(settings))


def cmd_accounts_key(settings, args) -> int:
    from cli.requests import send_and_check

    path = Path(args.output).expanduser()
    if path.exists():
        raise CredentialsError(f"{path} already exists: remove it or give another --output")
    hashed, credentials = member_key(settings, args.name)
    send_and_check(settings, args.account, "account.key_set", {"account": args.name, "key_hash": hashed})
    credentials.save(path)
    print(f"a new key for {args.name} is in {path} (the old one no longer connects); "
          f"use it with `marketctl --credentials {path} ...`")
    return 0


def register(worker_group, accounts_group, command) -> None:
    sub = command("register", cmd_worker_register, "register a worker with a key of its own; write its credentials "
                  "file (the key can only run that worker, never act for your account)", worker_group)
    sub.add_argument("--name", required=True, help="a name for the machine")
    sub.add_argument("--id", help="worker id (default: from the name, plus a random part)")
    sub.add_argument("--slots", type=int, default=1, help="jobs it runs at once (default 1)")
    sub.add_argument("--lease-seconds", type=int, default=60, help="lease length it asks for (default 60)")
    sub.add_argument("-o", "--output", type=Path, help=f"credentials file (default {WORKERS_DIR}/ID.json)")
    sub.add_argument("--json", action="store_true",
                     help='print {"worker_id": ..., "amqp_url": ..., "credentials_file": ...}')
    sub = command("revoke", cmd_worker_revoke, "revoke a worker's key for good: its connections close", worker_group)
    sub.add_argument("worker_id")
    sub = command("disable", cmd_accounts_disable, "disable an account (operator): its requests are refused and "
                  "its keys and its workers' keys stop working", accounts_group)
    sub.add_argument("name")
    sub.add_argument("--reason", default="", help="why (kept in the ledger)")
    sub = command("key", cmd_accounts_key, "make a new broker key for an account (yours, or any as the operator); "
                  "the old one stops working", accounts_group)
    sub.add_argument("name")
    sub.add_argument("-o", "--output", required=True, help="where to write the credentials file (mode 0600)")
