"""The shared Redis connection against a real redis-server."""

from __future__ import annotations

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    RedisConnectionError,
    broker_url,
    client_from_params,
    describe_target,
)
from tests.support.redis_server import free_port


def test_client_from_host_and_port_reaches_the_server(redis_server):
    client = client_from_params({"redis_host": "127.0.0.1", "redis_port": redis_server.port, "redis_db": 3})
    client.set("k", "v")
    assert redis_server.client(db=3).get("k") == b"v"


def test_client_from_url_with_password(redis_server_with_password):
    client = client_from_params({"redis_url": redis_server_with_password.url})
    assert client.ping() is True


def test_wrong_password_is_reported_in_words(redis_server_with_password):
    params = {"redis_host": "127.0.0.1", "redis_port": redis_server_with_password.port, "redis_password": "nope"}
    with pytest.raises(RedisConnectionError, match=r"refused the credentials"):
        client_from_params(params)


def test_missing_password_is_reported_in_words(redis_server_with_password):
    params = {"redis_host": "127.0.0.1", "redis_port": redis_server_with_password.port}
    with pytest.raises(RedisConnectionError, match=r"refused the credentials"):
        client_from_params(params)


def test_unreachable_server_is_reported_with_its_address():
    port = free_port()
    params = {"redis_host": "127.0.0.1", "redis_port": port, "redis_socket_timeout": 0.5}
    with pytest.raises(RedisConnectionError, match=rf"Cannot reach Redis at 127.0.0.1:{port}/0"):
        client_from_params(params)


def test_describe_target_never_shows_the_password():
    text = describe_target({"redis_url": "redis://:hunter2@db.example:6380/2"})
    assert text == "db.example:6380/2 (redis_url)"
    assert "hunter2" not in text


def test_broker_url_quotes_credentials_and_keeps_tls():
    url, options = broker_url(
        {"redis_host": "h", "redis_port": 1, "redis_db": 2, "redis_password": "p@ss/word", "redis_tls": True}
    )
    assert url == "rediss://:p%40ss%2Fword@h:1/2?ssl_cert_reqs=required"
    assert options == {}


def test_broker_url_for_sentinel_names_the_master():
    url, options = broker_url({"sentinel_hosts": ["s1:26379", "s2:26379"], "sentinel_service": "mymaster"})
    assert url == "sentinel://s1:26379/0;sentinel://s2:26379/0"
    assert options == {"master_name": "mymaster"}


def test_malformed_sentinel_host_is_refused():
    with pytest.raises(RedisConnectionError, match="not of the form host:port"):
        client_from_params({"sentinel_hosts": ["nohostport"], "sentinel_service": "m"})
