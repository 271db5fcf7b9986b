"""Unit-test fixtures beyond tests/conftest.py: TLS redis-servers with a CA made by the test,
and servers that answer but are not Redis."""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer, TlsFiles, make_tls_files


@pytest.fixture(scope="session")
def tls_files() -> Iterator[TlsFiles]:
    """A private CA and the server and client certificates it signs; removed at the end."""
    directory = tempfile.mkdtemp(prefix="queueops-tls-")
    try:
        yield make_tls_files(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_tls_server(tls_files) -> Iterator[RedisServer]:
    """TLS only, signed by the test's CA; a client certificate is accepted but not required."""
    server = RedisServer(tls=tls_files, tls_auth_clients="optional").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_mtls_server(tls_files) -> Iterator[RedisServer]:
    """TLS only, and every client must show a certificate signed by the test's CA."""
    server = RedisServer(tls=tls_files, tls_auth_clients="yes").start()
    yield server
    server.stop()


class _HttpAnswer(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0 rather than http.server's HTTP/0.9 default for a request line it cannot parse, so the
    # reply starts with a status line as nginx or any web server's would.
    default_request_version = "HTTP/1.0"

    def do_GET(self) -> None:  # pragma: no cover - Redis clients never send GET
        self.send_error(404)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP server (python http.server) on a loopback port: it answers, but not as Redis."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
