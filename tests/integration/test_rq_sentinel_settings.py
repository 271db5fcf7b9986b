"""The settings module the worker_release role writes for RQ workers behind Sentinel, against a real
primary, its replica and a Sentinel: a command sent while the primary is dead and not yet failed over
reaches the promoted replica as soon as the Sentinel names it, on a connection named after the worker."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time

import jinja2
import pytest
from rq.cli.helpers import get_redis_from_config

from tests.support.paths import REPO
from tests.support.redis_server import RedisServer, SentinelServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

TEMPLATE = REPO / "roles" / "worker_release" / "templates" / "queueops_rq_settings.py.j2"
NAME = "shop:1.6.0:w1-1-4242"


def _settings(tmp_path, sentinel: SentinelServer):
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["to_json"] = json.dumps
    text = environment.from_string(TEMPLATE.read_text()).render(
        ansible_managed="test",
        worker_release_pool="shop",
        worker_release_sentinel_hosts=[sentinel.address],
        worker_release_sentinel_service=sentinel.service,
        worker_release_sentinel_db=0,
    )
    path = tmp_path / "queueops_rq_settings.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("queueops_rq_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _master(sentinel: SentinelServer) -> int:
    return int(sentinel.client().sentinel_get_master_addr_by_name(sentinel.service)[1])


def test_a_command_sent_during_a_failover_reaches_the_promoted_replica_once_the_sentinel_names_it(
    tmp_path, monkeypatch
):
    primary, replica = RedisServer().start(), RedisServer().start()
    sentinel = None
    try:
        replica.client().replicaof("127.0.0.1", primary.port)
        sentinel = SentinelServer(master_port=primary.port, service="shop-redis").start()
        watcher = sentinel.client()
        watcher.sentinel_set(sentinel.service, "down-after-milliseconds", 1000)
        watcher.sentinel_set(sentinel.service, "failover-timeout", 5000)
        assert wait_until(lambda: len(watcher.sentinel_slaves(sentinel.service)) == 1, timeout=20)
        monkeypatch.setenv("QUEUEOPS_WORKER_NAME", NAME)
        client = get_redis_from_config({"SENTINEL": _settings(tmp_path, sentinel).SENTINEL})
        client.set("before", 1)
        assert wait_until(lambda: replica.client().get("before") == b"1")

        killed = time.monotonic()
        os.kill(primary.process.pid, signal.SIGKILL)  # the Sentinel names it for a second or two still
        client.set("during", 1)  # retried until it lands on a master
        took = time.monotonic() - killed

        assert _master(sentinel) == replica.port
        assert replica.client().get("during") == b"1"
        # The failover takes about 2 s here (down after 1 s, then the election). redis-py 5 alone would
        # go on trying the dead address with the connection's retry policy, 70 tries (over a minute),
        # before it asked the Sentinel again (redis-py#3560).
        assert took < 20, f"the command landed {took:.1f} s after the kill"
        names = [entry.get("name") for entry in replica.client().client_list()]
        assert NAME in names  # the connection opened on the new master carries the worker's name
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        primary.stop()
