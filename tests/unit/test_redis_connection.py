"""The shared Redis connection against a real redis-server: options, addresses, Sentinel."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from ansible_collections.queueops.rollback.plugins.doc_fragments.redis import ModuleDocFragment
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    REDIS_ARGUMENT_SPEC,
    RedisConnectionError,
    RedisOptionError,
    broker_url,
    client_from_params,
    describe_target,
    validate_connection_params,
)
from tests.support.redis_server import SentinelServer, free_port

# A message in words has no Python object in it: no repr of a class, a dict, a tuple or None.
PYTHON_REPR = re.compile(r"<[a-z_.]+[ (]|\{\(|Error\(|\bNone\b|\(\d+, '")


@pytest.fixture(scope="module")
def sentinel(redis_server):
    server = SentinelServer(master_port=redis_server.port, service="mymaster").start()
    yield server
    server.stop()


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
    assert url == "rediss://:p%40ss%2Fword@h:1/2?ssl_cert_reqs=required&ssl_check_hostname=true"
    assert options == {}


def test_broker_url_for_sentinel_names_the_master():
    url, options = broker_url({"sentinel_hosts": ["s1:26379", "s2:26379"], "sentinel_service": "mymaster"})
    assert url == "sentinel://s1:26379/0;sentinel://s2:26379/0"
    assert options == {"master_name": "mymaster"}


def test_malformed_sentinel_host_is_refused():
    with pytest.raises(RedisConnectionError, match="not of the form host:port"):
        client_from_params({"sentinel_hosts": ["nohostport"], "sentinel_service": "m"})


# --- defect 4: the database of a redis_url -------------------------------------------------------


def test_url_path_selects_that_database(redis_server):
    client = client_from_params({"redis_url": f"redis://127.0.0.1:{redis_server.port}/5"})
    client.set("in-db-5", "yes")
    assert redis_server.client(db=5).get("in-db-5") == b"yes"
    redis_server.client(db=5).delete("in-db-5")


def test_url_path_that_is_not_a_number_is_refused_not_read_as_db_0(redis_server):
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_url": f"redis://:pw@127.0.0.1:{redis_server.port}/abc"})
    assert str(caught.value) == (
        "redis_url names database 'abc' in its path: the path must be a database number such as /0"
    )


def test_url_db_query_that_is_not_a_number_is_refused(redis_server):
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_url": f"redis://127.0.0.1:{redis_server.port}?db=x"})
    assert str(caught.value) == "redis_url asks for database 'x' (?db=): it must be a number, 0 or more"


def test_negative_redis_db_is_refused():
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_host": "127.0.0.1", "redis_db": -1})
    assert str(caught.value) == "redis_db must be a database number, 0 or more, not -1"


def test_database_the_server_does_not_have_is_said_in_words(redis_server):
    params = {"redis_host": "127.0.0.1", "redis_port": redis_server.port, "redis_db": 99}
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    assert str(caught.value) == (
        f"Redis at 127.0.0.1:{redis_server.port}/99 has no database 99 (its 'databases' setting is lower): "
        "choose another redis_db"
    )


# --- defect 8: numbers in range, in words ---------------------------------------------------------


@pytest.mark.parametrize("port", [70000, 0, -1])
def test_redis_port_out_of_range_is_refused_before_connecting(port):
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_host": "127.0.0.1", "redis_port": port})
    assert str(caught.value) == f"redis_port must be a TCP port number from 1 to 65535, not {port}"


@pytest.mark.parametrize("port", ["70000", "0", "http"])
def test_url_port_out_of_range_is_refused_without_showing_the_url(port):
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_url": url})
    assert str(caught.value) == "redis_url has a port that is not a number from 1 to 65535"


def test_url_with_another_scheme_is_refused():
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_url": "http://127.0.0.1:8080/"})
    assert (
        str(caught.value) == "redis_url must start with redis://, rediss:// (TLS) or unix://; its scheme is 'http://'"
    )


@pytest.mark.parametrize("timeout", [0, -1.5, math.inf, math.nan])
def test_socket_timeout_must_be_a_positive_number_of_seconds(timeout):
    expected = r"^redis_socket_timeout must be a number of seconds greater than 0, not "
    with pytest.raises(RedisOptionError, match=expected):
        validate_connection_params({"redis_socket_timeout": timeout})


def test_sentinel_port_out_of_range_is_refused():
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"sentinel_hosts": ["127.0.0.1:26379", "s2:99999"], "sentinel_service": "m"})
    assert str(caught.value) == (
        "the port of sentinel_hosts entry 's2:99999' must be a TCP port number from 1 to 65535, not 99999"
    )


def test_sentinel_hosts_without_a_service_is_refused():
    with pytest.raises(RedisOptionError, match=r"^sentinel_service is required with sentinel_hosts"):
        validate_connection_params({"sentinel_hosts": ["127.0.0.1:26379"]})


def test_defaults_of_the_argument_spec_are_valid():
    validate_connection_params({name: option.get("default") for name, option in REDIS_ARGUMENT_SPEC.items()})


# --- defect 5: something answers, but not Redis ---------------------------------------------------


@pytest.mark.parametrize("with_password", [False, True], ids=["no-password", "password"])
def test_http_server_is_said_not_to_be_redis_with_its_address(http_server, with_password):
    auth = ":hunter2@" if with_password else ""
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params({"redis_url": f"redis://{auth}127.0.0.1:{http_server}/0", "redis_socket_timeout": 2})
    message = str(caught.value)
    expected = f"The server at 127.0.0.1:{http_server} did not answer as Redis: its reply began with HTTP/1.0 400 "
    assert message.startswith(expected)
    assert "hunter2" not in message
    assert not PYTHON_REPR.search(message)


def test_http_server_by_host_and_port_is_said_not_to_be_redis(http_server):
    with pytest.raises(RedisConnectionError, match=rf"^The server at 127.0.0.1:{http_server} did not answer as Redis"):
        client_from_params({"redis_host": "127.0.0.1", "redis_port": http_server})


# --- defect 8: Sentinel in words ------------------------------------------------------------------


def test_client_through_sentinel_reaches_the_master(redis_server, sentinel):
    client = client_from_params({"sentinel_hosts": [sentinel.address], "sentinel_service": "mymaster"})
    client.set("via-sentinel", "1")
    assert redis_server.client().get("via-sentinel") == b"1"
    redis_server.client().delete("via-sentinel")


def test_unreachable_sentinels_are_named_without_python_objects():
    first, second = free_port(), free_port()
    params = {
        "sentinel_hosts": [f"127.0.0.1:{first}", f"127.0.0.1:{second}"],
        "sentinel_service": "x",
        "redis_socket_timeout": 0.5,
    }
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    assert str(caught.value) == (
        f"None of the Redis Sentinels answered (127.0.0.1:{first} did not answer (connection refused); "
        f"127.0.0.1:{second} did not answer (connection refused)): check sentinel_hosts and that the Sentinels run"
    )


def test_sentinel_that_does_not_know_the_service_says_so(sentinel):
    params = {"sentinel_hosts": [sentinel.address, f"127.0.0.1:{free_port()}"], "sentinel_service": "nosuch"}
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    message = str(caught.value)
    assert message.startswith("No Redis Sentinel gave a usable master for sentinel_service 'nosuch' (")
    assert f"{sentinel.address} does not monitor a master named 'nosuch' (it monitors: mymaster)" in message
    assert "did not answer (connection refused)" in message
    assert not PYTHON_REPR.search(message)


def test_a_redis_server_named_as_sentinel_is_said_not_to_be_one(redis_server):
    params = {"sentinel_hosts": [f"127.0.0.1:{redis_server.port}"], "sentinel_service": "mymaster"}
    with pytest.raises(RedisConnectionError, match=r"answered with an error .*: is it a Sentinel\?"):
        client_from_params(params)


# --- where, in messages ---------------------------------------------------------------------------


def test_describe_target_of_urls_reads_db_from_path_or_query():
    assert describe_target({"redis_url": "rediss://u:p@[::1]:6390?db=4"}) == "[::1]:6390/4 (redis_url)"
    assert describe_target({"redis_url": "unix:///run/redis.sock?db=2"}) == "/run/redis.sock/2 (redis_url)"
    assert describe_target({"redis_url": "redis://h"}) == "h:6379/0 (redis_url)"


def test_argument_spec_and_doc_fragment_agree():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    assert set(documented) == set(REDIS_ARGUMENT_SPEC)
    for name, option in REDIS_ARGUMENT_SPEC.items():
        for field in ("type", "default", "elements"):
            assert documented[name].get(field) == option.get(field), f"{name}: {field}"
