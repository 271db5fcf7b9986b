# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything the collection knows about Celery 5.x on a Redis broker, without the user's app.

The modules build a bare Celery app from the shared Redis options (``broker_url(params)``) and
talk to the workers over the pidbox (``celery.control``): broadcasts carry a reply timeout and,
when the expected workers are known, a ``limit`` so a full set of replies returns at once.

Kombu Redis transport keys (kombu 5.x):

- ``<queue>``                 list of messages waiting (JSON envelopes), one per queue name
- ``unacked``                 hash ``delivery_tag`` -> JSON ``[message, exchange, routing_key]``
                              for every message a worker holds (running, reserved, prefetched)
- ``unacked_index``           zset ``delivery_tag`` -> time delivered
- ``_kombu.binding.<exchange>`` set of bindings ``routing_key\\x06\\x16pattern\\x06\\x16queue``
"""

from __future__ import annotations

import contextlib
import traceback
from typing import Any

try:
    from celery import Celery

    CELERY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    Celery = None
    CELERY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import broker_url

UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
DEFAULT_REPLY_TIMEOUT = 1.0


def make_app(params: dict[str, Any]):
    """A bare Celery app on the broker described by the shared Redis options (no user code)."""
    url, transport_options = broker_url(params)
    app = Celery("queueops", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        worker_hijack_root_logger=False,
    )
    return app


def close_app(app) -> None:
    with contextlib.suppress(Exception):  # closing is best effort
        app.close()


def node_host(node: str) -> str | None:
    """The host part of a Celery node name ``name@host`` (None when there is none)."""
    return node.split("@", 1)[1] if "@" in node else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


# --- replay and health gate (task_requeue, rollout_check) ---
