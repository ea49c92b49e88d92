"""The host check and the confined sandbox's own promises (no broker, no database)."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from contracts.package import result_as_json
from sandbox.battery import run_battery, table
from sandbox.confine import SCRATCH_IN_JOB, Confinement, unavailable_reason
from sandbox.runner import Limits, Sandbox
from tests.sandbox.test_sandbox import run, work_of


def reader(values: dict[str, str]):
    def read(path: str) -> str:
        if path not in values:
            raise FileNotFoundError(path)
        return values[path]
    return read


@pytest.mark.parametrize("values, root, setting", [
    ({"/proc/sys/user/max_user_namespaces": "0\n"}, True, "user.max_user_namespaces"),
    ({"/proc/sys/user/max_user_namespaces": "0\n"}, False, "user.max_user_namespaces"),
    ({"/proc/sys/kernel/unprivileged_userns_clone": "0\n"}, False, "kernel.unprivileged_userns_clone"),
    ({"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n"}, False,
     "kernel.apparmor_restrict_unprivileged_userns"),
], ids=["root, no user namespaces", "user, no user namespaces", "Debian's switch", "Ubuntu's AppArmor"])
def test_a_machine_without_user_namespaces_is_refused_naming_the_setting(values, root, setting):
    reason = unavailable_reason(read=reader(values), root=root)
    assert reason is not None and setting in reason and "sysctl -w" in reason and "\n" not in reason


def test_root_needs_no_unprivileged_user_namespaces_and_a_normal_machine_passes():
    assert unavailable_reason(read=reader({"/proc/sys/kernel/unprivileged_userns_clone": "0"}), root=True) is None
    assert unavailable_reason(read=reader({"/proc/sys/user/max_user_namespaces": "15000"}), root=False) is None


def test_this_machine_can_confine_jobs():
    # the test machine is one where the worker runs confined: everything below depends on it
    assert unavailable_reason() is None


def test_a_confined_job_is_nobody_with_no_capabilities_in_namespaces_of_its_own():
    work = work_of("""
        import ctypes, os, socket
        def run(state):
            libc = ctypes.CDLL(None, use_errno=True)
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)
            data = (ctypes.c_uint32 * 6)()
            libc.capget(header, data)
            no_new_privs = libc.prctl(39, 0, 0, 0, 0)
            return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "caps": list(data),
                    "no_new_privs": no_new_privs, "hostname": socket.gethostname(),
                    "interfaces": [name for _, name in socket.if_nameindex()], "proc": os.path.exists("/proc/1"),
                    "root": sorted(os.listdir("/")), "cwd": os.getcwd(), "home": os.environ["HOME"]}
    """, kind="function")
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        result = result_as_json(run(sandbox, work).result)
    assert (result["uid"], result["gid"], result["pid"]) == (65534, 65534, 1)
    assert result["caps"] == [0] * 6 and result["no_new_privs"] == 1
    assert result["hostname"] == "market-job" and result["interfaces"] == ["lo"] and not result["proc"]
    # the root holds /usr and friends, and the top folder of this checkout (the job packages, read-only)
    checkout_top = Path(__file__).resolve().parts[1]
    assert result["root"] == sorted({"bin", "dev", "etc", "lib", "lib64", "run", "sbin", "tmp", "usr", checkout_top,
                                     SCRATCH_IN_JOB.strip("/")})
    assert result["cwd"] == result["home"] == SCRATCH_IN_JOB


def test_the_market_home_and_the_repository_are_out_of_sight():
    repository = Path(__file__).resolve().parents[2]
    work = work_of(f"""
        import os
        def run(state):
            return sorted(os.listdir({str(repository)!r}))
    """, kind="function")
    with Sandbox(Limits(cpu_seconds=5)) as sandbox:
        seen = result_as_json(run(sandbox, work).result)
    # the packages a job needs (and the Python installation), read-only; no .market, no .git, no agents
    assert set(seen) <= {".venv", "sandbox", "contracts", "common"}


def test_the_whole_battery_is_contained_and_the_sandbox_runs_a_normal_job_after_each():
    async def battery():
        with Sandbox(Limits(cpu_seconds=10, file_bytes=32 * 2**20, processes=32)) as sandbox:
            return await run_battery(sandbox, Path("/nonexistent-market-home"), [1])
    rows = asyncio.run(battery())
    assert len(rows) == 12
    assert all(row.contained and row.next_job_ok for row in rows), table(rows)


def test_allow_network_shares_the_hosts_network_with_a_job_that_asked_for_it_only():
    work = work_of("""
        import socket
        def run(state):
            return sorted(name for _, name in socket.if_nameindex())
    """, kind="function")
    with Sandbox(Limits(cpu_seconds=5), confinement=Confinement(allow_network=True)) as sandbox:
        asked = result_as_json(run(sandbox, dataclasses.replace(work, network=True)).result)
        not_asked = result_as_json(run(sandbox, work).result)
    assert asked == sorted(name for _, name in __import__("socket").if_nameindex())
    assert not_asked == ["lo"]  # tests/sandbox/test_network.py: and not the host's loopback


def test_an_unsafe_sandbox_warns_on_every_lease(capsys):
    with Sandbox(Limits(cpu_seconds=5), confinement=Confinement(enabled=False)) as sandbox:
        for _ in range(2):
            assert run(sandbox, work_of("def run(state):\n    return 1\n", kind="function")).status == "finished"
    assert capsys.readouterr().out.count("sandbox.unsafe") == 2


def test_a_root_worker_s_sandbox_has_a_pids_cgroup_that_a_fork_bomb_fills_and_the_lease_end_empties():
    # Given a sandbox of 20 processes on this machine (root, with cgroup v1's pids controller)
    bomb = work_of("""
        import os, time
        def run(state):
            started = 0
            try:
                for _ in range(100):
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                    started += 1
            except OSError as e:
                return [started, e.strerror]
            return [started, None]
    """, kind="function")
    with Sandbox(Limits(cpu_seconds=5, processes=20)) as sandbox:
        cgroup = sandbox._server.cgroup
        assert cgroup is not None and (cgroup.path / "pids.max").read_text().strip() == "20"
        idle = cgroup.current()

        # When a job forks as many processes as it can
        started, error = result_as_json(run(sandbox, bomb).result)

        # Then the cgroup stopped it within the limit, and the lease's end took every process with it
        assert error == "Resource temporarily unavailable" and started < 20
        assert cgroup.current() == idle
    # And the cgroup goes with the sandbox
    assert not cgroup.path.exists()
