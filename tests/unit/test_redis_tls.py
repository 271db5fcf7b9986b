"""TLS as production Redis runs it: a private CA, mutual TLS, and Celery on the same settings.

Every server here is a real redis-server serving TLS only, with certificates made by the test.
"""

from __future__ import annotations

import ssl

import pytest
from celery import Celery

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    RedisConnectionError,
    RedisOptionError,
    celery_settings,
    client_from_params,
    tls_settings,
)
from tests.support.redis_server import RedisServer

VERIFY_FAILED = (
    "has a TLS certificate that could not be verified (self-signed certificate in certificate chain): "
    "set redis_tls_ca_path to the CA that signs it (redis_tls_validate_certs: false turns verification off)"
)


@pytest.fixture(scope="module")
def misnamed_tls_server(tls_files):
    """Signed by the test's CA, but for the name redis.invalid, not 127.0.0.1."""
    server = RedisServer(tls=tls_files.misnamed()).start()
    yield server
    server.stop()


def _host_port(server: RedisServer, **extra) -> dict:
    return {"redis_host": "127.0.0.1", "redis_port": server.port, "redis_tls": True, **extra}


def _round_trip(client) -> None:
    client.set("tls-probe", "1")
    assert client.get("tls-probe") == b"1"
    client.delete("tls-probe")


# --- redis-py: the modules' own connection ------------------------------------------------------


def test_url_with_ca_path_verifies_a_server_signed_by_a_private_ca(redis_tls_server, tls_files):
    client = client_from_params({"redis_url": redis_tls_server.tls_url, "redis_tls_ca_path": str(tls_files.ca_cert)})
    _round_trip(client)


def test_url_without_ca_path_fails_saying_the_certificate_did_not_verify(redis_tls_server):
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params({"redis_url": redis_tls_server.tls_url})
    assert str(caught.value) == f"Redis at 127.0.0.1:{redis_tls_server.port}/0 (redis_url) {VERIFY_FAILED}"


def test_ca_that_did_not_sign_the_server_is_refused(redis_tls_server, tls_files):
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(_host_port(redis_tls_server, redis_tls_ca_path=str(tls_files.other_ca_cert)))
    assert str(caught.value) == f"Redis at 127.0.0.1:{redis_tls_server.port}/0 {VERIFY_FAILED}"


def test_host_and_port_with_tls_and_ca_path_work(redis_tls_server, tls_files):
    _round_trip(client_from_params(_host_port(redis_tls_server, redis_tls_ca_path=str(tls_files.ca_cert))))


def test_localhost_is_a_name_the_server_certificate_carries(redis_tls_server, tls_files):
    params = _host_port(redis_tls_server, redis_host="localhost", redis_tls_ca_path=str(tls_files.ca_cert))
    _round_trip(client_from_params(params))


def test_certificate_for_another_host_name_is_refused(misnamed_tls_server, tls_files):
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(_host_port(misnamed_tls_server, redis_tls_ca_path=str(tls_files.ca_cert)))
    assert str(caught.value) == (
        f"Redis at 127.0.0.1:{misnamed_tls_server.port}/0 has a TLS certificate that does not name the host "
        "connected to (IP address mismatch, certificate is not valid for '127.0.0.1'): connect by a name the "
        "certificate carries (redis_tls_validate_certs: false turns verification off)"
    )


def test_validate_certs_false_connects_without_ca(redis_tls_server, misnamed_tls_server):
    _round_trip(client_from_params({"redis_url": redis_tls_server.tls_url, "redis_tls_validate_certs": False}))
    _round_trip(client_from_params(_host_port(misnamed_tls_server, redis_tls_validate_certs=False)))


def test_mutual_tls_with_client_certificate_and_key_works(redis_mtls_server, tls_files):
    params = {
        "redis_url": redis_mtls_server.tls_url,
        "redis_tls_ca_path": str(tls_files.ca_cert),
        "redis_tls_cert_path": str(tls_files.client_cert),
        "redis_tls_key_path": str(tls_files.client_key),
    }
    _round_trip(client_from_params(params))


def test_mutual_tls_without_client_certificate_is_refused_in_words(redis_mtls_server, tls_files):
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(_host_port(redis_mtls_server, redis_tls_ca_path=str(tls_files.ca_cert)))
    # TLS 1.3: the server refuses after the handshake, and its alert "certificate required" races
    # with its closing the socket, so the client sees either the alert or the connection dropped.
    target = f"Redis at 127.0.0.1:{redis_mtls_server.port}/0"
    assert str(caught.value) in (
        f"{target} refused the TLS connection: it requires a client certificate "
        "(set redis_tls_cert_path and redis_tls_key_path)",
        f"{target} closed the TLS connection: if it requires client certificates, "
        "set redis_tls_cert_path and redis_tls_key_path",
        f"{target} closed the TLS connection (connection reset by peer): if it requires client certificates, "
        "set redis_tls_cert_path and redis_tls_key_path",
    )


def test_certificate_that_is_not_a_client_certificate_is_refused(redis_mtls_server, tls_files):
    # A server certificate (extended key usage serverAuth) presented as a client's.
    params = _host_port(
        redis_mtls_server,
        redis_tls_ca_path=str(tls_files.ca_cert),
        redis_tls_cert_path=str(tls_files.misnamed_server_cert),
        redis_tls_key_path=str(tls_files.misnamed_server_key),
    )
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    target = f"Redis at 127.0.0.1:{redis_mtls_server.port}/0"
    assert str(caught.value) in (  # the alert or the dropped connection: see the test above
        f"{target} refused the TLS client certificate (alert: unsupported certificate): "
        "redis_tls_cert_path must be a client certificate signed by a CA the server trusts",
        f"{target} closed the TLS connection: if it requires client certificates, "
        "redis_tls_cert_path must be a client certificate signed by a CA it trusts",
        f"{target} closed the TLS connection (connection reset by peer): if it requires client certificates, "
        "redis_tls_cert_path must be a client certificate signed by a CA it trusts",
    )


def test_ca_file_that_does_not_exist_is_refused_before_connecting(redis_tls_server):
    with pytest.raises(RedisOptionError) as caught:
        client_from_params(_host_port(redis_tls_server, redis_tls_ca_path="/nonexistent/ca.pem"))
    assert str(caught.value) == (
        "redis_tls_ca_path /nonexistent/ca.pem is not a readable file on the host that runs the module"
    )


def test_key_without_its_certificate_is_refused(tls_files):
    with pytest.raises(RedisOptionError) as caught:
        client_from_params({"redis_tls": True, "redis_tls_key_path": str(tls_files.client_key)})
    assert str(caught.value) == "redis_tls_key_path needs redis_tls_cert_path, the client certificate of that key"


def test_ca_file_that_is_not_pem_is_said_in_words(redis_tls_server, tls_files):
    params = _host_port(redis_tls_server, redis_tls_ca_path=str(tls_files.directory / "not-a-ca.pem"))
    (tls_files.directory / "not-a-ca.pem").write_text("not a certificate\n")
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    assert str(caught.value).startswith(
        f"Redis at 127.0.0.1:{redis_tls_server.port}/0 was not contacted: the TLS files could not be loaded ("
    )


def test_plain_client_on_a_tls_port_is_told_about_tls(redis_tls_server):
    params = {"redis_host": "127.0.0.1", "redis_port": redis_tls_server.port, "redis_socket_timeout": 2}
    with pytest.raises(RedisConnectionError) as caught:
        client_from_params(params)
    assert str(caught.value).startswith(f"Cannot reach Redis at 127.0.0.1:{redis_tls_server.port}/0: ")
    assert "set redis_tls: true or use a rediss:// URL" in str(caught.value)


def test_tls_options_do_nothing_without_tls(redis_server, tls_files):
    params = {"redis_host": "127.0.0.1", "redis_port": redis_server.port, "redis_tls_ca_path": str(tls_files.ca_cert)}
    assert tls_settings(params) == {}
    assert client_from_params(params).ping() is True


# --- Celery (kombu): broker_use_ssl --------------------------------------------------------------


def test_celery_settings_carry_the_same_tls_as_the_client(tls_files):
    params = {
        "redis_host": "r",
        "redis_tls": True,
        "redis_tls_ca_path": "/ca.pem",
        "redis_tls_cert_path": "/c.pem",
        "redis_tls_key_path": "/k.pem",
    }
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    settings = celery_settings(params)
    assert settings["broker_use_ssl"] == expected
    assert settings["redis_backend_use_ssl"] == expected
    assert settings["broker_url"] == (
        "rediss://r:6379/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fca.pem&ssl_certfile=%2Fc.pem"
        "&ssl_keyfile=%2Fk.pem&ssl_check_hostname=true"
    )


def test_celery_settings_without_tls_have_no_ssl_settings():
    settings = celery_settings({"redis_url": "redis://h:1/2", "redis_tls_ca_path": "/ca.pem"})
    assert settings == {"broker_url": "redis://h:1/2", "broker_transport_options": {}}


def _celery_connects(params: dict) -> None:
    app = Celery("queueops-tls-test", set_as_current=False)
    app.conf.update(**celery_settings(params), broker_connection_retry_on_startup=False)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        assert app.control.ping(timeout=0.5) == []  # a broadcast over TLS: no worker, no error
    finally:
        app.close()


def test_celery_app_connects_over_tls_with_the_ca_of_a_url(redis_tls_server, tls_files):
    _celery_connects({"redis_url": redis_tls_server.tls_url, "redis_tls_ca_path": str(tls_files.ca_cert)})


def test_celery_app_connects_over_tls_by_host_and_port(redis_tls_server, tls_files):
    _celery_connects(_host_port(redis_tls_server, redis_tls_ca_path=str(tls_files.ca_cert)))


def test_celery_app_verifies_the_certificate_of_a_rediss_url(redis_tls_server):
    # kombu alone would connect to a rediss:// URL without verifying anything (ssl_cert_reqs none).
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED"):
        _celery_connects({"redis_url": redis_tls_server.tls_url})


def test_celery_url_with_some_tls_settings_in_its_query_still_gets_the_ca(redis_tls_server, tls_files):
    # kombu takes a URL's ssl_* query as the whole of its TLS settings: the missing ones are added.
    url = redis_tls_server.tls_url + "?ssl_cert_reqs=required"
    _celery_connects({"redis_url": url, "redis_tls_ca_path": str(tls_files.ca_cert)})


def test_celery_app_with_mutual_tls(redis_mtls_server, tls_files):
    params = _host_port(
        redis_mtls_server,
        redis_tls_ca_path=str(tls_files.ca_cert),
        redis_tls_cert_path=str(tls_files.client_cert),
        redis_tls_key_path=str(tls_files.client_key),
    )
    _celery_connects(params)
