"""Versioned routing: the release queue name rule, and what queue_info makes of release queues."""

from __future__ import annotations

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    InvalidName,
    parse_release_queue,
    release_queue,
    release_queues_of,
)
from ansible_collections.queueops.rollback.plugins.module_utils.routing import release_queue_facts


def test_a_release_queue_is_the_queue_and_the_version_split_at_the_last_at_sign():
    assert release_queue("orders", "1.9.0") == "orders@1.9.0"
    assert parse_release_queue("orders@1.9.0") == ("orders", "1.9.0")
    assert parse_release_queue(b"mail@eu@2.0.0") == ("mail@eu", "2.0.0")


@pytest.mark.parametrize("name", ["orders", "@1.9.0", "orders@", "orders@../x", "orders@-1"])
def test_names_that_are_not_release_queues(name):
    assert parse_release_queue(name) is None


def test_a_release_queue_takes_only_a_valid_version():
    with pytest.raises(InvalidName):
        release_queue("orders", "1.9:0")


def test_release_queues_of_a_queue_in_version_order():
    names = ["orders", "orders@1.10.0", "orders@1.9.0", "mail@1.9.0", "orders-eu@1.9.0", "orders@../x"]
    assert release_queues_of("orders", names) == {"1.9.0": "orders@1.9.0", "1.10.0": "orders@1.10.0"}


def test_facts_count_what_is_parked_and_warn_once_per_parked_queue():
    depths = {"orders@1.9.0": 12, "orders@1.9.1": 3}
    consumers = {"orders@1.9.1": 2}
    facts, warnings = release_queue_facts(
        ["orders", "mail"],
        ["orders", "orders@1.9.0", "orders@1.9.1", "mail"],
        lambda names: {n: depths.get(n, 0) for n in names},
        lambda name: consumers.get(name, 0),
    )
    assert facts == {
        "orders": {
            "1.9.0": {"queue": "orders@1.9.0", "depth": 12, "consumers": 0, "parked": 12},
            "1.9.1": {"queue": "orders@1.9.1", "depth": 3, "consumers": 2, "parked": 0},
        },
        "mail": {},
    }
    assert len(warnings) == 1 and warnings[0].startswith("12 task(s) of release 1.9.0 are parked on orders@1.9.0")
