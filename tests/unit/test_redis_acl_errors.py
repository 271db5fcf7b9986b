"""Least-privilege ACL users: every refusal said in words by ``redis_errors`` and ``ping``.

A redis-server of its own (its ACL users and replication state must not leak into other tests),
with users made by ``ACL SETUSER`` as an operator would write them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import redis

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    RedisAccessError,
    RedisConnectionError,
    client_from_params,
    redis_errors,
)
from tests.support.paths import COLLECTIONS_PATH
from tests.support.redis_server import RedisServer, free_port

USERS = {
    "reader": ["~*", "+@read", "+ping", "-@write"],
    "keyed": ["~rq:*", "&allowed:*", "+@all"],
    "noping": ["~*", "+get"],
}
PASSWORD = "acl-test-pw-7351"


@pytest.fixture(scope="module")
def acl_server():
    server = RedisServer().start()
    admin = server.client()
    for name, rules in USERS.items():
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}", *rules)
    yield server
    admin.close()
    server.stop()


@pytest.fixture
def admin(acl_server):
    client = acl_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def dedicated_server():
    """A server a test may stop or turn into a replica."""
    server = RedisServer().start()
    yield server
    server.stop()


def _params(server: RedisServer, user: str | None = None, **extra) -> dict:
    params = {"redis_host": "127.0.0.1", "redis_port": server.port, **extra}
    if user:
        params.update(redis_username=user, redis_password=PASSWORD)
    return params


def _refusal(params: dict, doing: str, action, *, keys=()) -> RedisAccessError:
    client = client_from_params(params)
    with pytest.raises(RedisAccessError) as caught, redis_errors(params, doing, keys=keys):
        action(client)
    assert PASSWORD not in str(caught.value)
    return caught.value


# --- commands, keys, channels ---------------------------------------------------------------------


def test_write_refused_to_a_read_only_user_names_user_target_command_and_purpose(acl_server, admin):
    params = _params(acl_server, "reader")
    error = _refusal(params, "suspend the RQ workers of db 0", lambda client: client.set("rq:suspended", "1"))
    assert str(error) == (
        f"Redis user 'reader' at 127.0.0.1:{acl_server.port}/0 may not run the SET command, needed to suspend "
        "the RQ workers of db 0 (grant it with the ACL rule +set)"
    )
    assert (error.user, error.kind, error.refused) == ("reader", "command", "the SET command")
    assert (error.target, error.doing) == (f"127.0.0.1:{acl_server.port}/0", "suspend the RQ workers of db 0")
    assert admin.exists("rq:suspended") == 0


def test_subcommand_refused_is_named_with_its_acl_rule(acl_server, admin):
    error = _refusal(
        _params(acl_server, "reader"), "read the server's settings", lambda client: client.config_get("databases")
    )
    assert str(error) == (
        f"Redis user 'reader' at 127.0.0.1:{acl_server.port}/0 may not run the CONFIG GET command, needed to "
        "read the server's settings (grant it with the ACL rule +config|get)"
    )


def test_key_outside_the_users_key_patterns_is_named(acl_server, admin):
    error = _refusal(
        _params(acl_server, "keyed"),
        "record the event in queueops:events",
        lambda client: client.xadd("queueops:events", {"event": "paused"}),
        keys=["queueops:events"],
    )
    assert str(error) == (
        f"Redis user 'keyed' at 127.0.0.1:{acl_server.port}/0 may not access the key queueops:events, needed to "
        "record the event in queueops:events (grant it with an ACL key pattern (~pattern) that covers it)"
    )
    assert (error.kind, error.refused) == ("key", "the key queueops:events")
    assert admin.exists("queueops:events") == 0


def test_refused_key_among_several_names_them_all(acl_server, admin):
    error = _refusal(
        _params(acl_server, "keyed"),
        "move the jobs",
        lambda client: client.rename("rq:queue:a", "elsewhere"),
        keys=["rq:queue:a", "elsewhere"],
    )
    assert "may not access one of the keys rq:queue:a, elsewhere, needed to move the jobs" in str(error)


def test_refused_key_without_names_says_one_of_the_keys(acl_server, admin):
    error = _refusal(_params(acl_server, "keyed"), "read the queue", lambda client: client.llen("orders"))
    assert str(error) == (
        f"Redis user 'keyed' at 127.0.0.1:{acl_server.port}/0 may not access one of the keys it used, needed to "
        "read the queue (grant it with an ACL key pattern (~pattern) that covers it)"
    )


def test_refused_key_inside_a_script_is_said_like_any_other(acl_server, admin):
    error = _refusal(
        _params(acl_server, "keyed"),
        "restore the keys",
        lambda client: client.eval("return redis.call('set', 'outside', '1')", 0),
    )
    assert error.kind == "key"
    assert "may not access one of the keys it used, needed to restore the keys" in str(error)


def test_refused_channel_is_said_in_words(acl_server, admin):
    error = _refusal(
        _params(acl_server, "keyed"), "broadcast to the Celery workers", lambda client: client.publish("celery", "x")
    )
    assert str(error) == (
        f"Redis user 'keyed' at 127.0.0.1:{acl_server.port}/0 may not use one of the channels it used, needed to "
        "broadcast to the Celery workers (grant it with an ACL channel pattern (&pattern) that covers it)"
    )


def test_refusal_inside_a_transaction_names_the_keys_but_never_the_values(acl_server, admin):
    def transaction(client):
        client.pipeline().set("rq:ok", "value-that-is-secret").set("outside", "value-that-is-secret").execute()

    error = _refusal(_params(acl_server, "keyed"), "restore the snapshot", transaction, keys=["rq:ok", "outside"])
    assert "value-that-is-secret" not in str(error)
    assert "may not access one of the keys rq:ok, outside, needed to restore the snapshot" in str(error)
    assert admin.exists("rq:ok", "outside") == 0  # MULTI/EXEC refused as a whole


# --- who, at connect time -------------------------------------------------------------------------


def test_ping_refused_at_connect_is_said_in_words(acl_server):
    with pytest.raises(RedisAccessError) as caught:
        client_from_params(_params(acl_server, "noping"))
    assert str(caught.value) == (
        f"Redis user 'noping' at 127.0.0.1:{acl_server.port}/0 may not run the PING command, needed to check the "
        "connection (grant it with the ACL rule +ping)"
    )


def test_select_refused_when_a_database_is_chosen(acl_server):
    with pytest.raises(RedisAccessError) as caught:
        client_from_params(_params(acl_server, "noping", redis_db=2))
    assert str(caught.value) == (
        f"Redis user 'noping' at 127.0.0.1:{acl_server.port}/2 may not run the SELECT command, needed to check the "
        "connection (grant it with the ACL rule +select)"
    )


def test_user_of_a_url_is_the_one_named_and_its_password_never(acl_server, admin):
    params = {"redis_url": f"redis://reader:{PASSWORD}@127.0.0.1:{acl_server.port}/0"}
    error = _refusal(params, "pause the queues", lambda client: client.delete("rq:queue:orders"))
    assert str(error).startswith(f"Redis user 'reader' at 127.0.0.1:{acl_server.port}/0 (redis_url) may not run ")


def test_default_user_is_named_default(dedicated_server):
    admin = dedicated_server.client()
    admin.execute_command("ACL", "SETUSER", "default", "-set")
    try:
        error = _refusal(_params(dedicated_server), "pause the queues", lambda client: client.set("k", "v"))
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")
    assert str(error).startswith(f"Redis user 'default' at 127.0.0.1:{dedicated_server.port}/0 may not run the SET")


# --- other failures in the middle of a run --------------------------------------------------------


def test_write_to_a_read_only_replica_is_said_in_words(dedicated_server):
    params = _params(dedicated_server)
    client = client_from_params(params)
    dedicated_server.client().execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    with pytest.raises(RedisConnectionError) as caught, redis_errors(params, "resume the queues"):
        client.delete("rq:suspended")
    assert str(caught.value) == (
        f"Redis at 127.0.0.1:{dedicated_server.port}/0 is a read-only replica and refused a write needed to "
        "resume the queues: connect to the master (or through sentinel_hosts)"
    )


def test_server_gone_in_the_middle_of_a_run_is_said_in_words(dedicated_server):
    params = _params(dedicated_server, redis_reconnect_timeout=1)  # the words once the retries gave up
    client = client_from_params(params)
    dedicated_server.stop()
    with pytest.raises(RedisConnectionError) as caught, redis_errors(params, "read the queues"):
        client.llen("rq:queue:orders")
    assert str(caught.value) == (
        f"Lost the connection to Redis at 127.0.0.1:{dedicated_server.port}/0 while trying to read the queues: "
        "connection refused"
    )


def test_reply_slower_than_the_socket_timeout_is_said_in_words(dedicated_server):
    params = _params(dedicated_server, redis_socket_timeout=0.3, redis_reconnect_timeout=1)
    client = client_from_params(params)
    with pytest.raises(RedisConnectionError) as caught, redis_errors(params, "wait for the queue"):
        client.blpop(["nothing-comes"], timeout=2)
    assert str(caught.value) == (
        f"Redis at 127.0.0.1:{dedicated_server.port}/0 did not answer within redis_socket_timeout (0.3 s) "
        "while trying to wait for the queue"
    )


def test_errors_that_are_not_about_access_pass_unchanged(acl_server, admin):
    params = _params(acl_server)
    client = client_from_params(params)
    client.set("a-string", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"), redis_errors(params, "read a list"):
        client.lpush("a-string", "x")
    with pytest.raises(FileNotFoundError), redis_errors(params, "read a file"):
        open("/nonexistent/queueops")  # noqa: SIM115 - the error is the point
    own = RedisConnectionError("already in words")
    with pytest.raises(RedisConnectionError) as caught, redis_errors(params, "anything"):
        raise own
    assert caught.value is own


def test_redis_errors_imports_and_catches_nothing_without_redis_py():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # import redis now raises ImportError
        from ansible_collections.queueops.rollback.plugins.module_utils import redis_connection as rc
        assert rc.REDIS_IMPORT_ERROR and rc.redis is None
        try:
            with rc.redis_errors({}, "take the snapshot"):
                raise OSError("a file error stays a file error")
        except OSError as exc:
            print(type(exc).__name__, exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(COLLECTIONS_PATH)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OSError a file error stays a file error"
