"""The shared Redis client rides out a restart of the server (redis_reconnect_timeout), as a fleet's
Redis container restarted in the middle of a rollback: a real redis-server, stopped with SIGTERM
(it writes its append-only file) and started again on the same port and data directory."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    RedisConnectionError,
    RedisOptionError,
    client_from_params,
)
from tests.support.redis_server import RedisServer, free_port


@pytest.fixture
def persistent_server():
    server = RedisServer(appendonly=True).start()
    yield server
    server.stop()


def restart_in_background(server: RedisServer, down: float) -> threading.Thread:
    thread = threading.Thread(target=server.restart, kwargs={"down": down})
    thread.start()
    return thread


def test_a_command_during_a_restart_waits_for_the_server_and_sees_its_data(persistent_server):
    client = client_from_params({"redis_url": persistent_server.url, "redis_reconnect_timeout": 15})
    client.set("queueops:probe", "before the restart")
    restarting = restart_in_background(persistent_server, down=1.5)
    time.sleep(0.5)  # the server is down now
    started = time.monotonic()
    assert client.get("queueops:probe") == b"before the restart"
    waited = time.monotonic() - started
    restarting.join()
    assert waited >= 0.5, f"answered after {waited:.2f} s: the server was not down"
    pipe = client.pipeline(transaction=True)  # transactions are sent again too
    pipe.incr("queueops:counter").incr("queueops:counter")
    assert pipe.execute() == [1, 2]


def test_a_transaction_during_a_restart_is_sent_again_once_it_is_back(persistent_server):
    client = client_from_params({"redis_url": persistent_server.url, "redis_reconnect_timeout": 15})
    client.ping()
    restarting = restart_in_background(persistent_server, down=1.0)
    time.sleep(0.3)
    pipe = client.pipeline(transaction=True)
    pipe.set("queueops:a", 1).set("queueops:b", 2)
    assert pipe.execute() == [True, True]
    restarting.join()
    assert client.mget("queueops:a", "queueops:b") == [b"1", b"2"]


def test_with_no_reconnect_time_a_restart_fails_the_command(persistent_server):
    client = client_from_params({"redis_url": persistent_server.url, "redis_reconnect_timeout": 0})
    client.ping()
    restarting = restart_in_background(persistent_server, down=1.0)
    time.sleep(0.3)
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get("queueops:probe")
    restarting.join()


def test_the_first_connection_is_not_retried_a_wrong_address_fails_at_once():
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        client_from_params({"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_reconnect_timeout": 30})
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("value", [-1, 3601, True, "soon"])
def test_reconnect_timeout_out_of_range_is_refused_in_words(value):
    with pytest.raises(RedisOptionError, match="redis_reconnect_timeout must be a number of seconds from 0 to 3600"):
        client_from_params({"redis_url": "redis://127.0.0.1:6379/0", "redis_reconnect_timeout": value})
