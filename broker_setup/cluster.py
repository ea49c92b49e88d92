"""A local RabbitMQ cluster: several LocalNodes on this machine, joined.

Node 1 is the single node ``marketctl up`` always ran (same name, ports and
folder), so a market grows from one node to a cluster without moving its
data. Node N (2, 3, ...) is named like node 1 with N after its name
(``market2@localhost``), lives in ``MARKET_HOME/rabbitmq-node2`` and has every
port ``CLUSTER_PORT_STEP * (N - 1)`` above node 1's. All nodes share one
Erlang cookie (``MARKET_HOME/secrets/erlang-cookie``), node 1's CA (so one CA
certificate checks every node) and, once joined, the users and queues.

Every quorum queue (the ones that hold market state, see topology.py) gets a
member on every node: queues declared after the cluster formed start that
way, and ``start`` grows the ones an earlier single node had made.

The chaos helpers (``leader_of``, ``kill_node``, ``start_node``) let a test
find the node that leads a queue, kill -9 its VM and bring it back.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from broker_setup.errors import NodeError
from broker_setup.management import ManagementApi, ManagementError
from broker_setup.node import LocalNode
from broker_setup.topology import CLASSIC, Topology, topology
from common.secrets import read_or_create
from common.settings import CLUSTER_PORT_STEP

#: seconds to wait for a killed VM to be gone, or for a queue to elect a leader
SETTLE_TIMEOUT = 60
#: name of the policy that mirrors the classic queues in a cluster
MIRROR_POLICY = "market-classic-mirrored"
#: the secret every node's Erlang VM (and rabbitmqctl) shows the others
COOKIE_SECRET = "erlang-cookie"

log = structlog.get_logger(__name__)


def classic_mirror_policy(topo: Topology) -> dict:
    """The policy that mirrors the topology's classic queues on every node of a cluster.

    They hold no market state (signals the agents re-read from the ledger,
    queries nobody keeps), but their consumers must not lose them with one
    node: a classic queue lives on one node, and while that node is down the
    broker cancels its consumers and refuses to declare it elsewhere (the
    scheduler and the ledger's queries would stop). Mirroring is a policy,
    not a queue argument, so the same declarations serve one node and a
    cluster. (Classic mirroring is deprecated since RabbitMQ 3.9 and gone in
    4.0, where these would have to become quorum queues; Debian 12 ships 3.10.)
    """
    names = sorted(q.name for q in topo.queues if q.queue_type == CLASSIC)
    return {"pattern": "^(" + "|".join(re.escape(name) for name in names) + ")$",
            "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"},
            "apply-to": "queues", "priority": 0}


def node_settings(settings, index: int):
    """The settings of node ``index`` (1-based) of the local cluster."""
    if index == 1:
        return settings
    offset = CLUSTER_PORT_STEP * (index - 1)
    name, _, host = settings.node_name.partition("@")
    return settings.replace(node_name=f"{name}{index}@{host}" if host else f"{name}{index}",
                            amqp_port=settings.amqp_port + offset,
                            management_port=settings.management_port + offset,
                            amqps_port=settings.amqps_port + offset if settings.amqps_port else 0)


def node_folder(settings, index: int) -> Path:
    """Where node ``index`` keeps its files (node 1: MARKET_HOME/rabbitmq, as ever)."""
    return Path(settings.home) / ("rabbitmq" if index == 1 else f"rabbitmq-node{index}")


class LocalCluster:
    """``size`` LocalNodes on this machine forming one RabbitMQ cluster."""

    def __init__(self, settings, size: int | None = None):
        self.settings = settings.replace(cluster_size=size or settings.cluster_size)
        self.settings.check_cluster_size()
        self.size = self.settings.cluster_size
        first_tls = (node_folder(settings, 1) / "tls").resolve()
        self.nodes = [LocalNode(node_settings(self.settings, i), base=node_folder(self.settings, i),
                                tls_dir=first_tls) for i in range(1, self.size + 1)]
        self.log = log.bind(cluster_size=self.size, first_node=self.settings.node_name)

    def node(self, index: int) -> LocalNode:
        """Node ``index``, 1-based like the node names."""
        if not 1 <= index <= self.size:
            raise NodeError(f"the cluster has nodes 1 to {self.size}, not {index}")
        return self.nodes[index - 1]

    @property
    def names(self) -> list[str]:
        return [node.settings.node_name for node in self.nodes]

    def index_of(self, node_name: str) -> int:
        """The 1-based index of the node called ``node_name``."""
        try:
            return self.names.index(node_name) + 1
        except ValueError as e:
            raise NodeError(f"{node_name} is not a node of this cluster ({', '.join(self.names)})") from e

    # ---- the whole cluster --------------------------------------------------------

    def start(self) -> list[bool]:
        """Start every node that is not running, join them to node 1, and give every
        quorum queue a member on each node. Returns, per node, whether it started it."""
        self._share_cookie()
        if self.settings.amqps_port:
            # made once, before the nodes start side by side and would race to make it
            self.nodes[0].tls.ensure(self.settings.tls_hosts)
        # side by side: a cluster stopped whole waits, at boot, for the node that
        # stopped last, so starting the nodes one after the other could hang
        with ThreadPoolExecutor(max_workers=self.size) as pool:
            starts = [pool.submit(node.start) for node in self.nodes]
        errors = [start.exception() for start in starts]
        started = [error is None and start.result() for start, error in zip(starts, errors)]
        try:
            for error in filter(None, errors):
                raise error
            for index in range(2, self.size + 1):
                self._join(index)
            for node in self.nodes[1:]:
                self._grow_onto(node)
            self._mirror_classic_queues()
        except Exception:
            # a cluster that did not come up whole leaves none of the nodes this call started
            # running (nor one whose start failed half way): nothing recorded them, so no
            # `down` would stop them, and they would hold the ports of the next try
            self._stop_started([did or error is not None for did, error in zip(started, errors)])
            raise
        self.log.info("cluster.started", started=sum(started))
        return started

    def stop(self) -> bool:
        """Stop every node, node 1 last. Returns True if any was running."""
        stopped = [node.stop() for node in reversed(self.nodes)]
        return any(stopped)

    def _stop_started(self, started: list[bool]) -> None:
        """Stop the nodes ``started`` marks, node 1 last; one that will not stop is killed."""
        for node, did_start in reversed(list(zip(self.nodes, started))):
            if not did_start:
                continue
            try:
                node.stop()
            except NodeError as e:
                self.log.warning("cluster.stop_failed", node=node.settings.node_name, error=str(e))
                node._kill_vm()
        self.log.warning("cluster.start_undone",
                         stopped=[node.settings.node_name for node, did in zip(self.nodes, started) if did])

    def running(self) -> list[bool]:
        """Per node: is its VM alive (read from its pid file, no VM boot)."""
        return [node.is_running() for node in self.nodes]

    # ---- chaos: find a queue's leader, kill it, bring it back ---------------------

    def leader_of(self, queue: str, vhost: str = "/") -> str:
        """The name of the node that leads quorum queue ``queue`` now (asked of a live node)."""
        info = self._queue_info(queue, vhost)
        leader = info.get("leader") or info.get("node")
        if not leader:
            raise NodeError(f"the broker names no leader for queue {queue!r}")
        return leader

    def members_of(self, queue: str, vhost: str = "/") -> list[str]:
        """The nodes that hold a replica of quorum queue ``queue``."""
        return sorted(self._queue_info(queue, vhost).get("members") or [])

    def wait_for_leader(self, queue: str, *, not_on: str | None = None, timeout: float = SETTLE_TIMEOUT) -> str:
        """The leader of ``queue`` once it is a running node other than ``not_on``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = self.leader_of(queue)
                if leader != not_on and self.node(self.index_of(leader)).is_running():
                    return leader
            except (NodeError, ManagementError):
                pass
            if time.monotonic() > deadline:
                raise NodeError(f"queue {queue!r} has no leader on a live node after {timeout:.0f}s")
            time.sleep(0.5)

    def kill_node(self, index: int) -> int:
        """kill -9 node ``index``'s Erlang VM, the way a crash would; returns its pid."""
        node = self.node(index)
        pid = node.pid()
        if pid is None or not node.is_running():
            raise NodeError(f"node {node.settings.node_name} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while node.is_running():
            if time.monotonic() > deadline:
                raise NodeError(f"node {node.settings.node_name} (pid {pid}) survived SIGKILL")
            time.sleep(0.1)
        # a stale pid file would make the next start's `rabbitmqctl wait` watch a dead pid
        node.pid_file.unlink(missing_ok=True)
        self.log.warning("cluster.node_killed", node=node.settings.node_name, pid=pid)
        return pid

    def start_node(self, index: int) -> bool:
        """Start node ``index`` again; it rejoins the cluster from its own data."""
        return self.node(index).start()

    # ---- joining ------------------------------------------------------------------

    def _share_cookie(self) -> None:
        # node 1 of a market that ran alone has a cookie already: the others take it
        first = self.nodes[0].base / ".erlang.cookie"
        cookie = first.read_text().strip() if first.exists() else read_or_create(self.settings.home, COOKIE_SECRET)
        for node in self.nodes:
            node.base.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = node.base / ".erlang.cookie"
            if path.exists() and path.read_text().strip() == cookie:
                continue
            if path.exists():
                path.chmod(0o600)
            path.write_text(cookie)
            # Erlang refuses a cookie file that others may read
            path.chmod(0o400)

    def _join(self, index: int) -> None:
        node, first = self.node(index), self.nodes[0].settings.node_name
        if first in self._cluster_nodes(node):
            return
        self.log.info("cluster.joining", node=node.settings.node_name, to=first)
        node._check(node.ctl("stop_app"), "stop_app")
        # reset: a node joins with an empty database (its own users and queues go)
        node._check(node.ctl("reset"), "reset")
        node._check(node.ctl("join_cluster", first), "join_cluster")
        node.start_app()

    def _cluster_nodes(self, node: LocalNode) -> list[str]:
        result = node._check(node.ctl("cluster_status", "--formatter", "json", "--quiet"), "cluster_status")
        try:
            status = json.loads(result.stdout)
        except ValueError as e:
            raise NodeError(f"rabbitmqctl cluster_status printed no JSON: {result.stdout[:200]!r}") from e
        return list(status.get("disk_nodes") or []) + list(status.get("ram_nodes") or [])

    def _grow_onto(self, node: LocalNode) -> None:
        # quorum queues an earlier, smaller cluster made get a member on this node too
        first = self.nodes[0]
        result = first._run(first.bin_dir / "rabbitmq-queues", "-n", first.settings.node_name,
                            "grow", node.settings.node_name, "all", timeout=120)
        if result.returncode != 0:
            raise NodeError(f"rabbitmq-queues grow {node.settings.node_name} failed: "
                            f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")

    def _mirror_classic_queues(self) -> None:
        policy = classic_mirror_policy(topology(self.settings))
        self.nodes[0].api().put(f"/policies/%2F/{MIRROR_POLICY}", policy)

    def _queue_info(self, queue: str, vhost: str) -> dict:
        errors = []
        for node in self.nodes:
            if not node.is_running():
                continue
            try:
                return node.api().get(f"/queues/{ManagementApi.quote(vhost)}/{ManagementApi.quote(queue)}")
            except (ManagementError, OSError) as e:
                errors.append(f"{node.settings.node_name}: {e}")
        raise NodeError(f"no live node answered for queue {queue!r}: {'; '.join(errors) or 'none is running'}")

