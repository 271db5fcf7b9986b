"""Pool and version names, and the worker identity convention."""

from __future__ import annotations

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    InvalidName,
    parse_worker_name,
    validate_name,
    worker_matches,
    worker_name,
)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "must be a non-empty string"),
        ("../etc", "must not contain '/', '\\\\' or '..'"),
        ("a/b", "must not contain '/'"),
        ("1.0\x00", "contains a control character"),
        ("1.0\n", "contains a control character"),
        ("shop:1", "must not contain ':'"),
        ("v@host", "must not contain '@'"),
        ("-rf", "must not start with '-' or '.'"),
        ("x" * 129, "is longer than 128 characters"),
        ("é" * 101, "is longer than 200 bytes in UTF-8"),
    ],
)
def test_unsafe_names_are_refused_with_the_reason(bad, message):
    with pytest.raises(InvalidName, match=message.replace("(", r"\(")):
        validate_name(bad, "version")


def test_a_128_character_ascii_name_is_accepted():
    assert validate_name("v" * 128, "version") == "v" * 128


def test_worker_names_carry_pool_and_release_for_rq_and_celery():
    name = worker_name("orders", "2.4.1", 3)
    assert name == "orders:2.4.1:3"
    assert parse_worker_name(name) == ("orders", "2.4.1", "3")
    assert parse_worker_name(f"{name}@web-1") == ("orders", "2.4.1", "3")
    assert parse_worker_name("celery@web-1") is None
    assert worker_matches(f"{name}@web-1", pool="orders", version="2.4.1")
    assert not worker_matches(name, version="2.4.0")
    assert worker_matches(name, pattern="orders:2.*")
