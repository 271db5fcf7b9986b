# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one skeleton of every module: its options plus the shared Redis options and their
constraints, the input rules of ``validation.RULES``, and the one place where the collection's
typed errors become ``fail_json`` messages in words (never a traceback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.queueops.rollback.plugins.module_utils.identity import InvalidName
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    REDIS_MUTUALLY_EXCLUSIVE,
    REDIS_REQUIRED_TOGETHER,
    RedisConnectionError,
    redis_argument_spec,
    redis_errors,
)
from ansible_collections.queueops.rollback.plugins.module_utils.validation import apply_rules

#: The ``backend`` option of every module that reads or changes queues (doc fragment queueops.rollback.backend).
BACKEND_OPTION: dict[str, Any] = {"type": "str", "required": True, "choices": ["rq", "celery"]}


def new_module(
    options: dict[str, dict[str, Any]],
    *,
    redis: bool = True,
    problem: Callable[[dict[str, Any]], str | None] | None = None,
    mutually_exclusive: list | None = None,
    required_together: list | None = None,
    **constraints: Any,
) -> AnsibleModule:
    """An AnsibleModule with check mode, the shared Redis options (unless ``redis=False``) and
    every option of ``options`` that has a rule checked by it; bad input fails here, in words.

    ``problem(params)`` says what makes a combination of options unusable (None when usable).
    """
    spec = redis_argument_spec(**options) if redis else dict(options)
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=[*(mutually_exclusive or []), *(REDIS_MUTUALLY_EXCLUSIVE if redis else [])],
        required_together=[*(required_together or []), *(REDIS_REQUIRED_TOGETHER if redis else [])],
        supports_check_mode=constraints.pop("supports_check_mode", True),
        **constraints,
    )
    with failing_in_words(module):
        apply_rules(module.params, options)
    trouble = problem(module.params) if problem else None
    if trouble:
        module.fail_json(msg=trouble, changed=False)
    return module


@contextlib.contextmanager
def failing_in_words(
    module: AnsibleModule, doing: str | None = None, *, unexpected: bool = False, **result: Any
) -> Iterator[None]:
    """Bad input and Redis refusals end the module with their message (and ``result``), nothing more.

    With ``doing`` (the words after "needed to"), Redis errors raised inside the block are said in
    words first (``redis_errors``): an ACL refusal names the user, the server, the command or key.
    With ``unexpected``, any other error ends it too, as "could not <doing>: <error>".
    """
    try:
        with contextlib.ExitStack() as stack:
            if doing:
                stack.enter_context(redis_errors(module.params, doing))
            yield
    except (InvalidName, RedisConnectionError) as exc:
        module.fail_json(msg=str(exc), **{"changed": False, **result})
    except Exception as exc:  # only with unexpected=True; re-raised otherwise
        if not unexpected:
            raise
        module.fail_json(msg=f"could not {doing or 'finish'}: {exc}", **{"changed": False, **result})


def require_celery(module: AnsibleModule) -> None:
    """``fail_json`` with Ansible's missing-library message when celery cannot be imported here.

    Imported here, not at the top: the modules that never talk to Celery (worker_version on every
    host among them, and every RQ run) do not pay for importing it, about 0.15 s a call.
    """
    from ansible_collections.queueops.rollback.plugins.module_utils.celery_backend import celery_import_error

    error = celery_import_error()
    if error is not None:
        module.fail_json(msg=missing_required_lib("celery"), exception=error)
