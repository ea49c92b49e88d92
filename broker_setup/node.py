"""A project-local RabbitMQ node for development and tests.

Everything the node writes (config, database, logs, pid file, Erlang cookie)
lives under ``settings.home / "rabbitmq"``, so several nodes (a developer's
and a test run's) can run side by side, and deleting that folder resets one.
It calls the scripts in /usr/lib/rabbitmq/bin directly: the /usr/sbin
wrappers switch to the ``rabbitmq`` user and would read /etc/rabbitmq.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
import urllib.error
from pathlib import Path

import structlog

from broker_setup import epmd, permissions
from broker_setup.errors import NodeError
from broker_setup.management import ManagementApi, ManagementError
from broker_setup.tls import Tls

#: where Debian's rabbitmq-server package puts the scripts we run as any user
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: seconds to wait for a starting node to accept connections
START_TIMEOUT = 60
#: starts of a node's VM before giving up (one that did not come up is killed first)
START_ATTEMPTS = 2
#: seconds to wait for a rabbitmqctl command (it boots an Erlang VM each time)
CTL_TIMEOUT = 90
#: the Erlang distribution port (and rabbitmqctl's port range) sit at these
#: offsets from the AMQP port, like RabbitMQ's own defaults for port 5672
DIST_PORT_OFFSET = 20000
CTL_DIST_PORT_OFFSET = 30000
#: tags of the operator's service user: administrator for the management API,
#: impersonator so the operator's tools may publish as any account
SERVICE_USER_TAGS = permissions.OPERATOR.tags
#: seconds to wait for the management API once the node is up
API_TIMEOUT = 30
#: seconds a stopped node's VM may take to exit before it is killed
STOP_GRACE = 30
#: seconds after the launch by which a booting node's VM shows in /proc (it takes milliseconds;
#: the margin is for a loaded machine)
VM_APPEARS = 5

log = structlog.get_logger(__name__)


class LocalNode:
    """One RabbitMQ node whose files all live in ``settings.home / "rabbitmq"``."""

    def __init__(self, settings, bin_dir: Path = RABBITMQ_BIN, *, base: Path | None = None,
                 tls_dir: Path | None = None):
        self.settings = settings
        self.bin_dir = Path(bin_dir)
        # a cluster's other nodes (broker_setup.cluster) have folders of their own
        # but share the first node's CA, so one CA certificate checks every node
        self.base = Path(base or Path(settings.home) / "rabbitmq").resolve()
        self.tls_dir = Path(tls_dir).resolve() if tls_dir else self.base / "tls"
        self.log = log.bind(node=settings.node_name, amqp_port=settings.amqp_port)

    @property
    def tls(self) -> Tls:
        """The node's CA and certificate (MARKET_HOME/rabbitmq/tls)."""
        return Tls(self.tls_dir)

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbitmq.pid"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    def start(self) -> bool:
        """Start the node and wait until it accepts connections.

        Does nothing if the node already runs. Returns True if it started it.
        Raises NodeError if RabbitMQ is not installed or the node does not come up.
        """
        self._require_installed()
        if self.is_running():
            return False
        self._require_free_ports()
        self._require_free_name()
        if self.settings.amqps_port:
            self.tls.ensure(self.settings.tls_hosts)
        self._write_config()
        started_at = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            if attempt > 1:
                self._require_free_name()
            self.log.info("node.starting", base=str(self.base), attempt=attempt)
            launched = self._run(self.bin_dir / "rabbitmq-server", "-detached", timeout=CTL_TIMEOUT)
            if launched.returncode != 0:
                raise NodeError(f"rabbitmq-server did not launch: {_last_line(launched)}")
            result = self._wait_started()
            if result.returncode == 0:
                break
            # a VM that did not come up is killed, never left holding the ports;
            # seen once: one of three nodes booting side by side on a loaded machine
            killed = self._kill_vm()
            self.log.warning("node.start_failed", attempt=attempt, killed=killed, reason=_last_line(result),
                             log=self._log_tail())
            if attempt == START_ATTEMPTS:
                raise NodeError(
                    f"RabbitMQ node {self.settings.node_name} did not start in {START_ATTEMPTS} tries of up "
                    f"to {START_TIMEOUT}s: {_last_line(result)}; its log ends: "
                    f"{self._log_tail()!r}; see the logs in {self.log_dir}"
                )
        self._ensure_service_user()
        self.ensure_service_users()
        self.log.info("node.started", seconds=round(time.monotonic() - started_at, 1))
        return True

    def stop(self) -> bool:
        """Stop the node and wait for its VM to exit. Returns True if it was running."""
        if not self.is_running():
            return False
        result = self.ctl("stop", str(self.pid_file))
        if result.returncode != 0 and self.is_running():
            raise NodeError(f"cannot stop {self.settings.node_name}: {_last_line(result)}")
        # a stopped node leaves no VM behind to hold its name in epmd (the next start's
        # would exit mid-boot): one still there after STOP_GRACE is killed
        deadline = time.monotonic() + STOP_GRACE
        while self._vm_pids(server_only=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        if leftover := self._vm_pids(server_only=True):
            self._kill_vm()
            self.log.warning("node.stop_forced", pids=leftover)
        self.log.info("node.stopped")
        return True

    def is_running(self) -> bool:
        """True if this node's Erlang VM is alive (read from its pid file, no VM boot)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        # the pid may have been reused since the node died
        return self._is_this_vm(argv)

    def _is_this_vm(self, argv: list[str]) -> bool:
        """The VM whose $HOME (erl's -home argument) is this node's folder."""
        return any(a == "-home" and b == str(self.base) for a, b in zip(argv, argv[1:]))

    def _vm_pids(self, *, server_only: bool = False) -> list[int]:
        """Pids of this node's Erlang VMs, found by their ``-home`` as :meth:`is_running`
        recognises them, pid file or not; with ``server_only``, not rabbitmqctl's
        (its VM runs with the node's $HOME too), only the one that boots rabbit."""
        return [pid for pid, argv in _processes()
                if self._is_this_vm(argv) and (not server_only or ("-s", "rabbit") in zip(argv, argv[1:]))]

    def _kill_vm(self) -> list[int]:
        """SIGKILL every Erlang VM of this node; the pids killed."""
        killed = []
        for pid in self._vm_pids():
            try:
                os.kill(pid, 9)
                killed.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while killed and time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in killed):
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return killed

    def _wait_started(self) -> subprocess.CompletedProcess:
        """``rabbitmqctl wait`` for the node just launched, given up at once if its VM
        exits while it boots (a detached VM's last words go nowhere, so the reason
        is looked for: the node's name held by another VM is the one seen)."""
        waiter = self._ctl_process("wait", str(self.pid_file), "--timeout", str(START_TIMEOUT))
        launched, launched_at, absent = time.monotonic(), time.time() - 1, 0
        while waiter.poll() is None:
            time.sleep(0.5)
            absent = 0 if self._vm_pids(server_only=True) else absent + 1
            exited = absent >= 2 and time.monotonic() - launched > VM_APPEARS
            if exited or time.monotonic() - launched > START_TIMEOUT + CTL_TIMEOUT:
                waiter.kill()
                waiter.communicate()
                reason = self._why_the_vm_exited(launched_at) if exited else f"rabbitmqctl wait ran past {START_TIMEOUT}s"
                return subprocess.CompletedProcess(waiter.args, 1, "", reason)
        stdout, stderr = waiter.communicate()
        return subprocess.CompletedProcess(waiter.args, waiter.returncode, stdout, stderr)

    def _why_the_vm_exited(self, launched_at: float) -> str:
        """What the VM left behind: the name's holder, or the slogan of the crash dump it wrote."""
        reason = self._name_holder() or self._crash_slogan(launched_at)
        return "its Erlang VM exited while booting" + (f": {reason}" if reason else "")

    def _crash_slogan(self, since: float) -> str:
        """The ``Slogan:`` line of the erl_crash.dump the VM wrote in its folder after ``since`` (epoch s)."""
        dump = self.base / "erl_crash.dump"
        try:
            if dump.stat().st_mtime < since:
                return ""
            with dump.open(errors="replace") as lines:
                for line in itertools.islice(lines, 10):
                    if line.startswith("Slogan: "):
                        return line.removeprefix("Slogan: ").strip()[:300]
        except OSError:
            pass
        return ""

    def _name_holder(self) -> str:
        """What holds this node's name in epmd, said for an error; "" when the name is free."""
        name = self.settings.node_name
        port = epmd.registered_names().get(epmd.short_name(name))
        if port is None:
            return ""
        pids = _vms_named(name)
        by = f"pid {', '.join(map(str, pids))}" if pids else "an Erlang VM"
        return f"the node name {name} is taken by {by} (distribution port {port})"

    def _require_free_name(self) -> None:
        # a VM already holding the name makes the new one exit mid-boot, silently
        if holder := self._name_holder():
            raise NodeError(f"{holder}: stop that node or choose another MARKET_NODE_NAME")

    def _log_tail(self) -> str:
        """The last line of the node's newest log file ("" if it wrote none)."""
        if not self.log_dir.is_dir():
            return ""
        logs = sorted(self.log_dir.glob("*.log"), key=lambda path: path.stat().st_mtime)
        for path in reversed(logs):
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1][-300:]
        return ""

    def pid(self) -> int | None:
        """The OS pid the node recorded, or None."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_app(self) -> None:
        """Stop the RabbitMQ application but keep the VM: clients see the broker go away."""
        self._check(self.ctl("stop_app"), "stop_app")

    def start_app(self) -> None:
        """Start the application again after ``stop_app`` and wait until it is up."""
        self._check(self.ctl("start_app"), "start_app")
        self._check(self.ctl("await_startup", "--timeout", str(START_TIMEOUT)), "await_startup")

    def restart(self) -> None:
        """Stop the whole node and start it again (queues and messages survive)."""
        self.stop()
        self.start()

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``rabbitmqctl -n NODE ARGS...`` against this node; never raises on exit status."""
        self._require_installed()
        return self._run(self.bin_dir / "rabbitmqctl", "-n", self.settings.node_name, *args,
                         timeout=timeout)

    def _ctl_process(self, *args: str) -> subprocess.Popen:
        """``rabbitmqctl -n NODE ARGS...`` started, not waited for."""
        return subprocess.Popen([str(self.bin_dir / "rabbitmqctl"), "-n", self.settings.node_name, *args],
                                env=self.env(), cwd=self.base, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def env(self) -> dict[str, str]:
        """The environment both rabbitmq-server and rabbitmqctl run with."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            # the Erlang cookie lives in $HOME; the server and ctl must share it
            HOME=str(self.base),
            # an empty env file, so /etc/rabbitmq/rabbitmq-env.conf is not read
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=str(self.base / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_NODENAME=s.node_name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(s.amqp_port),
            RABBITMQ_DIST_PORT=str(s.amqp_port + DIST_PORT_OFFSET),
            RABBITMQ_CTL_DIST_PORT_MIN=str(s.amqp_port + CTL_DIST_PORT_OFFSET),
            RABBITMQ_CTL_DIST_PORT_MAX=str(s.amqp_port + CTL_DIST_PORT_OFFSET + 10),
            # the Erlang distribution listens on loopback only, like AMQP and HTTP
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _write_config(self) -> None:
        s = self.settings
        for folder in (self.base, self.base / "conf.d", self.base / "mnesia", self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # the Erlang cookie and the config (the operator's secret) live here: ours alone
        os.chmod(self.base, 0o700)
        _write_atomically(self.base / "rabbitmq-env.conf", "")
        _write_atomically(self.base / "enabled_plugins", "[rabbitmq_management].\n")
        # default_user only applies when the node boots with an empty database;
        # _ensure_service_user covers a database created with other settings
        _write_atomically(
            self.base / "rabbitmq.conf",
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{s.amqp_port}",
                    f"management.tcp.port = {s.management_port}",
                    "management.tcp.ip = 127.0.0.1",
                    f"default_user = {s.service_user}",
                    f"default_pass = {s.service_secret}",
                    *(f"default_user_tags.{tag} = true" for tag in SERVICE_USER_TAGS),
                    "default_permissions.configure = .*",
                    "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    # the operator's user and the services connect only from this host
                    f"loopback_users.{s.service_user} = true",
                    *self._tls_config(),
                    "log.console = false",
                    "log.file.level = info",
                    "",
                ]
            )
        )

    def _tls_config(self) -> list[str]:
        # members and workers off this host: TLS on every address; plain AMQP stays on loopback
        if not self.settings.amqps_port:
            return []
        return [f"listeners.ssl.default = {self.settings.amqps_port}",
                f"ssl_options.cacertfile = {self.tls.ca_cert}",
                f"ssl_options.certfile = {self.tls.cert}",
                f"ssl_options.keyfile = {self.tls.key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
                "ssl_options.versions.1 = tlsv1.3",
                "ssl_options.versions.2 = tlsv1.2"]

    def _ensure_service_user(self) -> None:
        """The operator's user has this home's secret, its tags and every permission.

        Usually true from the node's first boot (rabbitmq.conf's default_user);
        a node made by an older version, with another password, is brought in
        line with rabbitmqctl (slow: an Erlang VM per call, so only then)."""
        if self._api_answers():
            self.api().put(f"/permissions/%2F/{ManagementApi.quote(self.settings.service_user)}",
                           {"configure": ".*", "write": ".*", "read": ".*"})
            return
        user, secret = self.settings.service_user, self.settings.service_secret
        self.log.info("node.resetting_service_user", user=user)
        if user not in self._list_users():
            self._check(self.ctl("add_user", user, secret), "add_user")
        else:
            self._check(self.ctl("change_password", user, secret), "change_password")
        self._check(self.ctl("set_user_tags", user, *SERVICE_USER_TAGS), "set_user_tags")
        self._check(self.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*"), "set_permissions")

    def ensure_service_users(self) -> None:
        """Every market service has a broker user of its own, with its own random
        secret (MARKET_HOME/secrets) and only the rights broker_setup.permissions
        gives it; no ``guest``."""
        api = self.api()
        for user, rights in permissions.SERVICES.items():
            api.put(f"/users/{api.quote(user)}", {"password": self.settings.secret_of(user),
                                                  "tags": ",".join(rights.tags)})
            permissions.apply(api, user, rights)
        api.delete_if_present("/users/guest")

    def api(self) -> ManagementApi:
        return ManagementApi(self.settings.management_url, self.settings.service_user, self.settings.service_secret)

    def _api_answers(self) -> bool:
        """True when the management API takes the operator's secret; False when it refuses it."""
        deadline = time.monotonic() + API_TIMEOUT
        while True:
            try:
                self.api().get("/whoami")
                return True
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return False
                error: Exception = e
            except ManagementError as e:
                error = e
            if time.monotonic() > deadline:
                raise NodeError(f"the management API of {self.settings.node_name} does not answer: {error}")
            time.sleep(0.2)

    def _list_users(self) -> dict[str, list[str]]:
        result = self._check(self.ctl("list_users", "--formatter", "json", "--quiet"), "list_users")
        try:
            rows = json.loads(result.stdout)
        except ValueError as e:
            raise NodeError(f"rabbitmqctl list_users printed no JSON: {result.stdout[:200]!r}") from e
        return {row["user"]: _tags(row["tags"]) for row in rows}

    def _check(self, result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
        if result.returncode != 0:
            raise NodeError(f"rabbitmqctl {what} failed on {self.settings.node_name}: "
                            f"{_last_line(result)}")
        return result

    def _run(self, program: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [str(program), *args],
                env=self.env(),
                cwd=self.base if self.base.is_dir() else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise NodeError(f"{program.name} {' '.join(args)} took more than {timeout}s") from e

    def _require_free_ports(self) -> None:
        # a leftover node from another folder would make the start fail late and obscurely
        s = self.settings
        for port, what in ((s.amqps_port, "MARKET_AMQPS_PORT"), (s.amqp_port, "MARKET_AMQP_PORT"),
                           (s.management_port, "MARKET_MANAGEMENT_PORT"),
                           (s.amqp_port + DIST_PORT_OFFSET, "MARKET_AMQP_PORT")):
            if port_in_use(port):
                raise NodeError(
                    f"port {port} is already in use (another RabbitMQ node?): "
                    f"stop that process or choose another {what}"
                )

    def _require_installed(self) -> None:
        if not (self.bin_dir / "rabbitmq-server").exists():
            raise NodeError(
                f"RabbitMQ is not installed ({self.bin_dir}/rabbitmq-server is missing): "
                "run `make demo` or apt-get install rabbitmq-server"
            )


def port_in_use(port: int) -> bool:
    """True when something listens on ``port`` on loopback."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _processes():
    """(pid, argv) of every process this user may read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue


def _vms_named(node_name: str) -> list[int]:
    """Pids of the RabbitMQ VMs started with ``RABBITMQ_NODENAME=node_name``
    (RabbitMQ 3.10 names its node from that variable, not from erl's -sname)."""
    wanted = f"RABBITMQ_NODENAME={node_name}".encode()
    pids = []
    for pid, argv in _processes():
        if "beam" not in argv[0]:
            continue
        try:
            if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, and not at all when it holds ``text``
    already: a VM of this node still booting (a start racing a restart) reads its
    config while we write, and a truncated file fails its boot with
    failed_to_parse_configuration_file."""
    if path.exists() and path.read_text() == text:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _tags(raw) -> list[str]:
    # rabbitmqctl prints tags as a list in newer versions, "[a, b]" text in older ones
    if isinstance(raw, list):
        return [str(tag) for tag in raw]
    return [tag.strip() for tag in str(raw).strip("[]").split(",") if tag.strip()]


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"
