# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Former home of the snapshot code, kept for callers outside the collection's modules
(benchmarks/bench_snapshot.py). New code imports snapshot_store and its siblings directly."""

from __future__ import annotations

from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_store import (
    apply_restore,
    list_snapshots,
    plan_restore,
    take_snapshot,
)

__all__ = ["apply_restore", "list_snapshots", "plan_restore", "take_snapshot"]
