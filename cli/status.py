"""``marketctl status``: what runs (and how often the supervisor restarted it),
whether the portal reaches the broker, how deep the queues are, how far the
ledger got."""
from __future__ import annotations

import asyncio

from broker_setup.amqp import connect, queue_depths
from broker_setup.topology import topology
from cli import local_servers, supervisor
from cli.stack import _safe_url, agent_statuses, alive, pid_file, read_pid
from common.errors import MarketError

#: seconds ``status`` waits for the portal's /health
HEALTH_TIMEOUT = 3.0


def status(settings) -> dict:
    """What runs, how deep the queues are, how far the ledger got."""
    from ledger.migrate import make_engine
    from ledger.store import LedgerStore

    restarts = supervisor.read_state(settings)
    report: dict = {"agents": {a.name: {"pid": a.pid, "running": a.running,
                                        "restarts": restarts.get(a.name, {}).get("restarts", 0)}
                               for a in agent_statuses(settings)}}
    supervisor_pid = read_pid(pid_file(settings, supervisor.NAME))
    report["supervisor"] = {"pid": supervisor_pid, "running": alive(supervisor_pid)}
    report["nodes"] = local_servers.broker_nodes(settings)
    try:
        report["queues"] = asyncio.run(_depths(settings))
        report["broker"] = {"reachable": True, "management_url": settings.management_url if settings.uses_local_broker else None}
    except MarketError as e:
        report["queues"], report["broker"] = {}, {"reachable": False, "error": str(e)}
    report["portal"] = portal_health(settings)
    try:
        engine = make_engine(settings.db_url)
        store = LedgerStore(engine)
        report["ledger"] = {"last_seq": store.last_seq(), "outbox_backlog": store.outbox_backlog(),
                            "database": _safe_url(settings.db_url)}
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - status reports, it does not fail
        report["ledger"] = {"error": f"cannot read the ledger database: {e.__class__.__name__}: {str(e).splitlines()[0]}"}
    return report


def portal_health(settings) -> dict:
    """The portal's own answer on /health: whether it reaches the broker, how
    often it reconnected; or why it did not answer."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://{settings.web_host}:{settings.web_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read())  # 503: it answers, and says what is wrong
        except ValueError:
            return {"error": f"{url} answered {e.code}"}
    except (OSError, ValueError) as e:
        return {"error": f"no answer from {url} ({getattr(e, 'reason', e)})"}


async def _depths(settings) -> dict:
    topo = topology(settings)
    connection = await connect(settings, "marketctl status")
    try:
        depths = await queue_depths(await connection.channel(), [q.name for q in topo.queues])
    finally:
        await connection.close()
    return {name: {"messages": d[0], "consumers": d[1]} if d else None for name, d in depths.items()}


def format_status(report: dict) -> str:
    lines = ["agents:"]
    for name, agent in report["agents"].items():
        lines.append(f"  {name:<12} {'running' if agent['running'] else 'stopped':<8} pid {agent['pid'] or '-':<8} "
                     f"restarts {agent.get('restarts', 0)}")
    supervisor = report.get("supervisor") or {}
    lines.append(f"supervisor: {'running' if supervisor.get('running') else 'stopped'}"
                 + (f" (pid {supervisor['pid']})" if supervisor.get("running") else ""))
    broker = report["broker"]
    lines.append("broker: " + ("reachable" if broker.get("reachable") else f"unreachable ({broker.get('error')})"))
    if broker.get("management_url"):
        lines.append(f"  management UI {broker['management_url']}")
    lines += local_servers.format_nodes(report.get("nodes") or [])
    if report["queues"]:
        lines.append(f"  {'queue':<24} {'messages':>9} {'consumers':>9}")
        for name, depth in report["queues"].items():
            if depth is None:
                lines.append(f"  {name:<24} {'missing':>9}")
            else:
                lines.append(f"  {name:<24} {depth['messages']:>9} {depth['consumers']:>9}")
    portal = report.get("portal") or {}
    if "broker" in portal:
        lines.append(f"portal: broker {portal['broker']}, {portal['reconnects']} reconnect(s)"
                     + (f" ({portal['error']})" if portal.get("error") else ""))
    else:
        lines.append(f"portal: {portal.get('error', 'unknown')}")
    ledger = report["ledger"]
    if "error" in ledger:
        lines.append(f"ledger: {ledger['error']}")
    else:
        lines.append(f"ledger: last sequence {ledger['last_seq']}, outbox backlog {ledger['outbox_backlog']} ({ledger['database']})")
    return "\n".join(lines)
