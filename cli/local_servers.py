"""The servers ``marketctl up`` runs under MARKET_HOME: the broker (one node or a
cluster, ``--cluster N``) and, with ``--db postgres``, a PostgreSQL cluster.

``up`` records what it started in MARKET_HOME/run, so ``status``, ``down``
and every other marketctl command on this host find the same broker nodes
and the same database without the operator repeating the options.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from broker_setup.cluster import LocalCluster
from broker_setup.errors import BrokerError
from broker_setup.topology import LEDGER_INBOX

if TYPE_CHECKING:
    from ledger.pgserver import PgServer

#: the run mark naming the node (or the cluster's first node) ``up`` started
BROKER_MARK = "broker.started-by-up"
#: the run mark holding the size of the cluster ``up --cluster N`` started
CLUSTER_MARK = "broker.cluster-size"
#: the run mark holding the URL of the PostgreSQL ``up --db postgres`` started
POSTGRES_MARK = "postgres.url"
#: the database the live market uses on its local PostgreSQL
POSTGRES_DATABASE = "market"
#: what ``--db`` takes
DATABASES = ("sqlite", "postgres")


def recorded(settings):
    """``settings`` with the broker cluster and database ``up`` recorded, where
    MARKET_CLUSTER_SIZE and MARKET_DB_URL do not say otherwise."""
    run = settings.run_dir
    if settings.cluster_size == 1 and (run / CLUSTER_MARK).exists():
        settings = settings.replace(cluster_size=int((run / CLUSTER_MARK).read_text().strip()))
    if settings.uses_local_db and (run / POSTGRES_MARK).exists():
        settings = settings.replace(db_url_override=(run / POSTGRES_MARK).read_text().strip())
    return settings


def postgres_server(settings) -> PgServer:
    """The market's own PostgreSQL cluster, MARKET_HOME/postgres, on MARKET_PG_PORT."""
    # on first use: marketctl starts on every command, and a worker-only install has no SQLAlchemy
    from ledger.pgserver import PgServer

    return PgServer(Path(settings.home) / "postgres", settings.pg_port)


def start_broker(settings, say) -> None:
    """Start the local node, or the cluster of ``settings.cluster_size`` nodes; record it."""
    cluster = LocalCluster(settings)
    started = cluster.start() if cluster.size > 1 else [cluster.nodes[0].start()]
    run = settings.run_dir
    if any(started):
        (run / BROKER_MARK).write_text(settings.node_name)
    if cluster.size > 1:
        (run / CLUSTER_MARK).write_text(str(cluster.size))
    for node, did_start in zip(cluster.nodes, started):
        s = node.settings
        say(f"broker: {'started' if did_start else 'already running'} {s.node_name} on amqp port {s.amqp_port}"
            f" (management UI {s.management_url})")
    say(f"management UI login: {settings.service_user}, password in "
        f"{settings.home}/secrets/amqp-{settings.service_user}")


def stop_broker(settings, say) -> None:
    """Stop the node or every node of the cluster ``up`` started (nothing it did not start)."""
    run = settings.run_dir
    if not (run / BROKER_MARK).exists():
        return
    cluster = LocalCluster(settings)
    cluster.stop()
    (run / BROKER_MARK).unlink(missing_ok=True)
    (run / CLUSTER_MARK).unlink(missing_ok=True)
    say(f"broker: stopped {', '.join(cluster.names)}")


def start_database(settings, db: str, say):
    """With ``db == "postgres"``: start MARKET_HOME's PostgreSQL and make the market's
    database; ``settings`` pointing at it. Otherwise ``settings`` as they are."""
    if db == "sqlite" or not settings.uses_local_db:
        return settings
    server = postgres_server(settings)
    did_start = server.start()
    url = server.ensure_database(POSTGRES_DATABASE)
    (settings.run_dir / POSTGRES_MARK).write_text(url)
    say(f"postgresql: {'started' if did_start else 'already running'} in {server.data_dir} on port {server.port}")
    return settings.replace(db_url_override=url)


def stop_database(settings, say) -> None:
    mark = settings.run_dir / POSTGRES_MARK
    if not mark.exists():
        return
    if postgres_server(settings).stop():
        say("postgresql: stopped")
    mark.unlink(missing_ok=True)


def broker_nodes(settings) -> list[dict]:
    """Each local node: its name, AMQP port, whether it runs, and whether it leads ledger.inbox."""
    if not settings.uses_local_broker:
        return []
    cluster = LocalCluster(settings)
    leader = None
    if cluster.size > 1 and any(cluster.running()):
        try:
            leader = cluster.leader_of(LEDGER_INBOX)
        except BrokerError:
            leader = None  # status reports, it does not fail
    return [{"name": node.settings.node_name, "amqp_port": node.settings.amqp_port, "running": running,
             "leads_ledger_inbox": node.settings.node_name == leader}
            for node, running in zip(cluster.nodes, cluster.running())]


def format_nodes(nodes: list[dict]) -> list[str]:
    lines = []
    for node in nodes:
        lead = "  leads ledger.inbox" if node["leads_ledger_inbox"] else ""
        lines.append(f"  node {node['name']:<24} {'up' if node['running'] else 'down':<5} "
                     f"amqp port {node['amqp_port']}{lead}")
    return lines
