"""Count tasks exactly: what the producer enqueued against what the workers recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

ENQUEUED = "queueops:ledger:enqueued"  # set of tokens the test produced
STARTS = "queueops:ledger:starts"
DONE = "queueops:ledger:done"
FAILED = "queueops:ledger:failed"


@dataclass
class Ledger:
    client: redis.Redis

    def note_enqueued(self, *tokens: str) -> None:
        if tokens:
            self.client.sadd(ENQUEUED, *tokens)

    def enqueued(self) -> set[str]:
        return {t.decode() for t in self.client.smembers(ENQUEUED)}

    def done_counts(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(DONE).items()}

    def failed_counts(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(FAILED).items()}

    def starts(self) -> list[dict]:
        return [json.loads(raw) for raw in self.client.lrange(STARTS, 0, -1)]

    def starts_between(self, t0: float, t1: float, queues: set[str] | None = None) -> list[dict]:
        return [s for s in self.starts() if t0 <= s["t"] <= t1 and (queues is None or s["queue"] in queues)]

    def lost(self) -> set[str]:
        """Enqueued tokens that never completed."""
        return self.enqueued() - set(self.done_counts())

    def duplicated(self) -> dict[str, int]:
        return {token: n for token, n in self.done_counts().items() if n > 1}
