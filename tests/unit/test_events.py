"""The shared event stream against a real redis-server."""

from __future__ import annotations

import json

from ansible_collections.queueops.rollback.plugins.module_utils.events import (
    EVENTS_STREAM,
    record_event,
)


def test_event_is_appended_with_flat_fields(redis_client):
    event_id = record_event(redis_client, "worker_version", "activated", pool="orders", detail={"from": "1", "to": "2"})
    [(stored_id, fields)] = redis_client.xrange(EVENTS_STREAM)
    assert stored_id.decode() == event_id
    assert fields[b"module"] == b"worker_version"
    assert fields[b"action"] == b"activated"
    assert fields[b"pool"] == b"orders"
    assert json.loads(fields[b"detail"]) == {"from": "1", "to": "2"}


def test_stream_is_capped(redis_client):
    for i in range(12_000):
        record_event(redis_client, "m", "a", n=str(i))
    assert redis_client.xlen(EVENTS_STREAM) < 12_000


def test_event_failure_does_not_raise(redis_client):
    redis_client.set(EVENTS_STREAM, "not a stream")
    assert record_event(redis_client, "m", "a") is None


def test_record_or_warn_warns_and_goes_on_when_the_stream_cannot_be_written(redis_client):
    from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn

    class Module:
        warnings: list[str] = []

        def warn(self, text):
            self.warnings.append(text)

    module = Module()
    assert record_or_warn(module, redis_client, "m", "paused") is not None
    assert module.warnings == []
    redis_client.delete(EVENTS_STREAM)
    redis_client.set(EVENTS_STREAM, "not a stream")
    assert record_or_warn(module, redis_client, "m", "paused") is None
    assert module.warnings == ["could not record the paused event in the queueops:events stream"]
