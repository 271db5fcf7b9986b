"""The harness scenario: systemd runs in each worker container, testinfra reaches it over SSH, and
Redis is reachable by name."""

from __future__ import annotations

import pytest

REDIS_HOST = "qo-default-redis"


def test_systemd_is_pid_1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend").stdout


def test_reached_over_ssh_as_root_by_key_only(host):
    # testinfra's ansible backend runs each command through the host the inventory maps it to:
    # an SSH backend here, not the slow fallback (one ansible run per command) nor podman.
    if host.backend.NAME == "ansible":
        inner = host.backend.ansible_runner.get_host(host.backend.host)
        assert inner is not None, "the inventory gives testinfra no direct connection to the host"
        assert inner.backend.NAME == "ssh"
    else:
        assert host.backend.NAME == "ssh"
    assert host.check_output("id -u") == "0"
    sshd = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert sshd["permitrootlogin"] == "without-password"  # prohibit-password, as sshd -T says it
    assert sshd["passwordauthentication"] == "no"
    assert sshd["usedns"] == "no"
    assert host.service("ssh").is_enabled


def test_redis_answers_by_container_name(host):
    assert host.run(f"redis-cli -h {REDIS_HOST} ping").stdout.strip() == "PONG"


def test_redis_round_trip_from_worker(host):
    name = host.check_output("hostname")
    assert host.run(f"redis-cli -h {REDIS_HOST} set harness:{name} ok").stdout.strip() == "OK"
    assert host.run(f"redis-cli -h {REDIS_HOST} get harness:{name}").stdout.strip() == "ok"


def test_network_is_internal_no_route_off_the_machine(host):
    routes = host.run("ip route show default").stdout.strip()
    assert routes == "", f"the scenario network must have no default route, found: {routes}"


@pytest.mark.parametrize("path", ["/opt/queueops"])
def test_release_root_exists(host, path):
    assert host.file(path).is_directory
