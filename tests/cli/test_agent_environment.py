"""What `marketctl up` hands each agent: a worker on its own key starts with
none of the market's secrets and none of the blob store's credentials."""
from __future__ import annotations

from cli.stack import agent_environment
from common.settings import Settings

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrEXAMPLEKEY",
               "AWS_SESSION_TOKEN": "token", "MARKET_DB_URL": "postgresql://ledger:pw@db/market",
               "MARKET_SERVICE_PASSWORD": "operator-secret"}


def test_a_local_worker_never_inherits_the_stores_or_the_markets_secrets(tmp_path, monkeypatch):
    # Given an operator whose shell holds the S3 store's and the ledger's credentials
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(environ={"MARKET_BLOB_STORE": "s3://market"}, home=tmp_path)

    # When up starts a local worker (on its own key) and the ledger
    worker = agent_environment(settings, "worker-1", secret_free=True)
    ledger = agent_environment(settings, "ledger")

    # Then the worker has none of them, and the ledger keeps the store's key
    assert not set(CREDENTIALS) & set(worker)
    assert not [name for name in worker if name.startswith("AWS_") or "SECRET" in name or "PASSWORD" in name]
    assert ledger["AWS_SECRET_ACCESS_KEY"] == "wJalrEXAMPLEKEY"
