#!/usr/bin/env python3
"""Take and restore time of config_snapshot for 1,000 files and 100,000 Redis keys.

Baselines measured in the same run on the same data:
- files: ``cp -a`` of the tree into a copy (take) and back over the drifted tree (restore, also
  followed by ``sync``, since ours fsyncs every file it replaces), and ``tar -c`` of the tree;
- keys: a naive per-key copy - one DUMP + PTTL per key, then one RESTORE ... REPLACE per key,
  unpipelined - which is what a hand-written script usually does.

Ours does more work than the baselines (sha256 of every item, a manifest, verification of every
checksum before a restore, a comparison to skip what is already in place, one MULTI/EXEC), so a
ratio near or below 1 means the guarantees are cheap.

Run: .venv/bin/python benchmarks/bench_snapshot.py [--files 1000] [--keys 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".cache" / "collections"))
sys.path.insert(0, str(REPO))

from ansible_collections.queueops.rollback.plugins.module_utils import snapshots as snap  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(repeat: int, prepare, run) -> float:
    samples = []
    for _ in range(repeat):
        prepare()
        samples.append(timed(run))
    return statistics.median(samples)


def make_tree(top: Path, count: int) -> None:
    for index in range(count):
        path = top / f"d{index // 50:03d}" / f"sub{index % 5}" / f"f{index:05d}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# file {index}\n" + f"key{index} = value{index}\n" * 60)


def drift_tree(top: Path) -> None:
    for path in top.rglob("*.conf"):
        path.write_text("drifted\n")


def seed_keys(client, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        name = f"bench:{index:06d}"
        kind = index % 10
        if kind < 8:
            pipe.set(name, f"value-{index}-" + "x" * 40)
        elif kind == 8:
            pipe.hset(name, mapping={f"f{i}": f"v{i}" for i in range(10)})
        else:
            pipe.rpush(name, *[f"item{i}" for i in range(10)])
        if index % 4 == 0:
            pipe.expire(name, 3600)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def drift_keys(client, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(0, count, 1):
        pipe.delete(f"bench:{index:06d}")
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def naive_copy(client) -> dict:
    saved = {}
    for name in client.scan_iter(match="bench:*", count=1000):
        saved[name] = (client.pttl(name), client.dump(name))
    return saved


def naive_restore(client, saved: dict) -> None:
    for name, (ttl, payload) in saved.items():
        client.restore(name, max(ttl, 0), payload, replace=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="queueops-bench-snapshot-"))
    server = RedisServer().start()
    try:
        client = server.client()
        top = work / "etc" / "app"
        store = str(work / "snapshots")
        make_tree(top, options.files)
        seed_keys(client, options.keys)
        rows = []

        # ---- files -------------------------------------------------------------------------
        def fresh_store() -> None:
            shutil.rmtree(store, ignore_errors=True)

        take_files = median_of(options.repeat, fresh_store, lambda: snap.take_snapshot(store, "files", [str(top)], []))
        copy = work / "copy"
        cp_take = median_of(
            options.repeat,
            lambda: shutil.rmtree(copy, ignore_errors=True),
            lambda: subprocess.run(["cp", "-a", str(top), str(copy)], check=True),
        )
        tar_take = median_of(
            options.repeat,
            lambda: None,
            lambda: subprocess.run(["tar", "-cf", str(work / "t.tar"), "-C", str(top), "."], check=True),
        )
        unchanged_files = median_of(
            options.repeat, lambda: None, lambda: snap.take_snapshot(store, "files", [str(top)], [])
        )

        def restore_files() -> None:
            plan = snap.plan_restore(store, "files", None)
            snap.apply_restore(plan, store, "files")

        restore_ours = median_of(options.repeat, lambda: drift_tree(top), restore_files)
        cp_restore = median_of(
            options.repeat,
            lambda: drift_tree(top),
            lambda: subprocess.run(["cp", "-a", f"{copy}/.", str(top)], check=True),
        )
        cp_sync_restore = median_of(
            options.repeat,
            lambda: drift_tree(top),
            lambda: subprocess.run(["sh", "-c", f"cp -a '{copy}/.' '{top}' && sync"], check=True),
        )
        noop_restore = median_of(options.repeat, lambda: None, restore_files)
        rows += [
            (f"take {options.files} files", take_files, "cp -a", cp_take),
            (f"take {options.files} files", take_files, "tar -c", tar_take),
            (f"take {options.files} files, unchanged", unchanged_files, "cp -a", cp_take),
            (f"restore {options.files} drifted files", restore_ours, "cp -a back", cp_restore),
            (f"restore {options.files} drifted files", restore_ours, "cp -a back; sync", cp_sync_restore),
            (f"restore {options.files} files, in place", noop_restore, "cp -a back", cp_restore),
        ]

        # ---- keys --------------------------------------------------------------------------
        def take_keys() -> None:
            snap.take_snapshot(store, "keys", [], ["bench:*"], client)

        take_ours = median_of(
            options.repeat, lambda: shutil.rmtree(Path(store) / "keys", ignore_errors=True), take_keys
        )
        saved: dict = {}
        naive_take = median_of(options.repeat, lambda: None, lambda: saved.update(naive_copy(client)))
        unchanged_keys = median_of(options.repeat, lambda: None, take_keys)

        def restore_keys() -> None:
            plan = snap.plan_restore(store, "keys", None, lambda: client)
            snap.apply_restore(plan, store, "keys", client)

        restore_ours_keys = median_of(options.repeat, lambda: drift_keys(client, options.keys), restore_keys)
        naive_restore_time = median_of(
            options.repeat, lambda: drift_keys(client, options.keys), lambda: naive_restore(client, saved)
        )
        noop_keys = median_of(options.repeat, lambda: None, restore_keys)
        rows += [
            (f"take {options.keys} keys", take_ours, "per-key DUMP", naive_take),
            (f"take {options.keys} keys, unchanged", unchanged_keys, "per-key DUMP", naive_take),
            (f"restore {options.keys} deleted keys", restore_ours_keys, "per-key RESTORE", naive_restore_time),
            (f"restore {options.keys} keys, in place", noop_keys, "per-key RESTORE", naive_restore_time),
        ]

        print(f"config_snapshot benchmark (median of {options.repeat}; ratio = ours / baseline, lower is better)")
        print(f"{'operation':<38} {'ours s':>8}  {'baseline':<16} {'base s':>8} {'ratio':>7}")
        for label, ours, baseline, base in rows:
            print(f"{label:<38} {ours:8.3f}  {baseline:<16} {base:8.3f} {ours / base:7.2f}")
        sizes = {item["id"]: item["size"] for item in snap.list_snapshots(store, "keys")}
        print(f"keys snapshot on disk: {max(sizes.values()) / 1e6:.1f} MB")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
