"""One rule per kind of input: every module refuses the same bad pool, queue, count or duration with
the same words, before it touches Redis or a file (modules run through ansible-runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils import validation
from tests.support.runner import run_module

LONG_QUEUE = "q" * 100_000

# Enough options for each module to get past its own required ones.
BASE = {
    "queue_pause": {"backend": "rq", "queues": ["orders"]},
    "queue_info": {"backend": "rq", "queues": ["orders"]},
    "task_requeue": {"backend": "rq", "queues": ["orders"]},
    "rollout_check": {"backend": "rq", "queues": ["orders"], "release": "1.0.0", "window": 0.1},
    "worker_version": {"pool": "orders", "state": "query"},
    "config_snapshot": {"name": "orders", "paths": []},
}


def _run(module, redis_server, tmp_path, **options):
    args = {**BASE[module], **options}
    if module in ("worker_version", "config_snapshot"):
        args["root"] = str(tmp_path / "root")
    if module != "worker_version":
        args["redis_url"] = redis_server.url
    return run_module(module, args)


@pytest.mark.parametrize("module", ["task_requeue", "rollout_check", "worker_version"])
@pytest.mark.parametrize(("pool", "words"), [("a/b", "must not contain '/'"), ("..", "or '..'")])
def test_a_pool_that_could_escape_a_directory_is_refused_by_every_module(
    module, pool, words, redis_server, redis_client, tmp_path
):
    result = _run(module, redis_server, tmp_path, pool=pool)
    assert result.failed and not result.changed
    assert result.msg.startswith(f"pool {pool!r}") and words in result.msg, result.msg
    assert not redis_client.exists("queueops:events"), "refused before anything was done"


@pytest.mark.parametrize("module", ["queue_pause", "queue_info", "task_requeue", "rollout_check"])
def test_a_100000_character_queue_name_is_refused_by_every_module(module, redis_server, redis_client, tmp_path):
    result = _run(module, redis_server, tmp_path, queues=[LONG_QUEUE])
    assert (
        result.failed
        and result.msg == "queues entry 'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq'... is longer than 200 bytes in UTF-8"
    )
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("module", ["worker_version", "config_snapshot"])
def test_keep_zero_is_refused_by_every_module_that_prunes(module, redis_server, tmp_path):
    result = _run(module, redis_server, tmp_path, keep=0)
    assert result.failed and result.msg == "keep must be 1 or more, not 0"
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 1e12}, "window must be at most 604800 seconds (7 days), not 1e+12"),
        ({"window": 0}, "window must be more than 0 seconds, not 0"),
        ({"max_failure_ratio": 2}, "max_failure_ratio must be between 0 and 1, not 2.0"),
        ({"min_tasks": -1}, "min_tasks must be 0 or more, not -1"),
    ],
)
def test_rollout_check_numbers_out_of_range_are_refused_in_words(options, message, redis_server, tmp_path):
    result = _run("rollout_check", redis_server, tmp_path, **options)
    assert result.failed and result.msg == message


@pytest.mark.parametrize(
    ("module", "options", "message"),
    [
        ("queue_pause", {"ttl": 0}, "ttl must be more than 0 seconds, not 0"),
        ("queue_pause", {"timeout": -1}, "timeout must be 0 or more seconds, not -1"),
        ("queue_pause", {"reply_timeout": 0}, "reply_timeout must be more than 0 seconds, not 0"),
        ("task_requeue", {"limit": 0}, "limit must be 1 or more, not 0"),
        ("task_requeue", {"heartbeat_timeout": 0}, "heartbeat_timeout must be more than 0 seconds, not 0"),
        ("task_requeue", {"to_queue": "a b"}, "to_queue 'a b' must not contain spaces or control characters"),
    ],
)
def test_the_same_kind_of_number_gets_the_same_rule(module, options, message, redis_server, tmp_path):
    result = _run(module, redis_server, tmp_path, **options)
    assert result.failed and result.msg == message


def test_rules_cover_every_number_and_name_option_the_modules_share():
    shared = {"pool", "version", "queues", "keep", "timeout", "ttl", "window", "limit", "reply_timeout"}
    assert shared <= set(validation.RULES)
    with pytest.raises(validation.InvalidInput, match="must be a finite number of seconds"):
        validation.RULES["window"](float("nan"), "window")


MODULES_DIR = Path(__file__).resolve().parents[2] / "plugins" / "modules"


@pytest.mark.parametrize("module", sorted(p.stem for p in MODULES_DIR.glob("*.py") if p.stem != "__init__"))
def test_every_return_entry_of_every_module_has_a_sample(module):
    import importlib

    import yaml

    documented = yaml.safe_load(
        importlib.import_module(f"ansible_collections.queueops.rollback.plugins.modules.{module}").RETURN
    )
    assert [name for name, entry in documented.items() if "sample" not in entry] == []


@pytest.mark.parametrize(
    ("module", "options"),
    [
        ("queue_pause", {"backend": "celery", "queues": ["orders"]}),
        ("queue_info", {"backend": "celery", "queues": ["orders"]}),
        ("task_requeue", {"backend": "celery"}),
        ("rollout_check", {"backend": "celery", "queues": ["orders"], "release": "1.0.0", "window": 0.1}),
    ],
)
def test_without_the_celery_library_every_celery_module_says_so(module, options, redis_server, tmp_path):
    shadow = tmp_path / "no-celery"
    (shadow / "celery").mkdir(parents=True)
    (shadow / "celery" / "__init__.py").write_text("raise ImportError('celery is not installed here')\n")
    result = run_module(module, {**options, "redis_url": redis_server.url}, envvars={"PYTHONPATH": str(shadow)})
    assert result.failed and not result.changed
    assert "Failed to import the required Python library (celery)" in result.msg, result.msg
