"""The harness scenario: systemd runs in each worker container and Redis is reachable by name."""

from __future__ import annotations

import pytest

REDIS_HOST = "qo-default-redis"


def test_systemd_is_pid_1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend").stdout


def test_redis_answers_by_container_name(host):
    assert host.run(f"redis-cli -h {REDIS_HOST} ping").stdout.strip() == "PONG"


def test_redis_round_trip_from_worker(host):
    name = host.backend.get_hostname()
    assert host.run(f"redis-cli -h {REDIS_HOST} set harness:{name} ok").stdout.strip() == "OK"
    assert host.run(f"redis-cli -h {REDIS_HOST} get harness:{name}").stdout.strip() == "ok"


def test_network_is_internal_no_route_off_the_machine(host):
    routes = host.run("ip route show default").stdout.strip()
    assert routes == "", f"the scenario network must have no default route, found: {routes}"


@pytest.mark.parametrize("path", ["/opt/queueops"])
def test_release_root_exists(host, path):
    assert host.file(path).is_directory
