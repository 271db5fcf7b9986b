"""The Redis options set once for a play through the collection's action group."""

from __future__ import annotations

import json

from tests.support.runner import run_playbook


def test_module_defaults_of_the_redis_group_reach_every_redis_module(redis_server, redis_client, tmp_path):
    redis_client.sadd("rq:queues", "rq:queue:orders")
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {"group/queueops.rollback.redis": {"redis_url": redis_server.url}},
            "tasks": [
                {"queueops.rollback.queue_pause": {"backend": "rq", "queues": ["orders"], "ttl": 60}},
                {"queueops.rollback.queue_info": {"backend": "rq", "queues": ["orders"]}, "register": "info"},
                {"ansible.builtin.assert": {"that": ["info.suspended", "info.queues.orders.paused"]}},
                {"queueops.rollback.queue_pause": {"backend": "rq", "queues": ["orders"], "state": "resumed"}},
            ],
        }
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    runner = run_playbook(playbook, private_data_dir=tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    assert runner.stats["changed"] == {"localhost": 2}
    assert not redis_client.exists("rq:suspended")
    assert [e[1][b"action"] for e in redis_client.xrange("queueops:events")] == [b"paused", b"resumed"]
