"""Fixtures shared by unit and integration tests: a real redis-server per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.ledger import Ledger
from tests.support.paths import COLLECTIONS_PATH, REPO
from tests.support.redis_server import RedisServer

if not (COLLECTIONS_PATH / "ansible_collections" / "queueops" / "rollback").exists():
    raise pytest.UsageError("the collection is not linked under .cache/collections: run `make setup` first")
sys.path.insert(0, str(COLLECTIONS_PATH))
sys.path.insert(0, str(REPO))
# ansible-runner finds ansible-playbook on PATH: the one of the Python running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server_with_password():
    server = RedisServer(password="s3cret-test-pass").start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on a freshly emptied server: each test starts from nothing."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def ledger(redis_client):
    return Ledger(redis_client)


@pytest.fixture
def workers():
    """Append started workers here; each is stopped (warm shutdown) when the test ends."""
    started: list = []
    yield started
    for worker in started:
        worker.stop(timeout=10)


@pytest.fixture(scope="session")
def rq116():
    """A virtualenv with RQ 1.16, the last 1.x, for the key layouts older fleets still write."""
    from tests.support.venvs import venv_with

    return venv_with("rq-1.16", ["rq==1.16.2", "redis==5.2.1"])
