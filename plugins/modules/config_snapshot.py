#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: config_snapshot
short_description: Verified snapshots of config files and Redis keys, restored as one unit
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Takes, restores, lists and deletes snapshots of what a worker pool's behaviour depends on
    outside its code - its config files on the host and its Redis keys (routing, feature gates,
    rate limits).
  - A snapshot is stored on the managed host under O(root)/O(name)/<id>/ with a manifest holding
    the sha256, size, mode and owner of every file and the type, TTL and sha256 of the C(DUMP) of
    every key. Snapshot directories are mode 0700 and their files 0600, since they may hold secrets.
  - Taking a snapshot whose content equals the latest one reports C(changed=false) and returns the
    latest id.
  - A restore verifies every checksum first; a corrupted, truncated or incomplete snapshot is
    refused with a message naming the bad item, and nothing is changed. Files are then replaced
    atomically (temporary file and rename, mode and owner restored) and keys are restored with
    C(RESTORE ... REPLACE) and deleted with C(DEL) in one C(MULTI)/C(EXEC) transaction.
options:
  name:
    description:
      - Name of the snapshot set, usually the pool name. No C(/), C(..), C(:), C(@) or control characters.
    type: str
    required: true
  root:
    description: Directory on the managed host that holds the snapshots.
    type: path
    default: /var/lib/queueops/snapshots
  paths:
    description:
      - Absolute paths to snapshot with O(state=present) - files, directories (recursively) and
        glob patterns (C(*), C(?) and C([...]) within a name, C(**) at any depth; C(**) never enters a
        symlinked directory, the link is kept as a link).
      - A path that does not exist is recorded as absent; a restore removes it if it exists then.
      - Paths on pseudo-filesystems are refused, after resolving symlinks - anything under C(/proc),
        C(/sys), C(/dev) or C(/run), and anything on a C(proc), C(sysfs), C(devtmpfs), C(cgroup) or other
        kernel filesystem wherever it is mounted. They hold no configuration and can be endless.
      - Ignored with other states; a restore uses the paths recorded in the snapshot.
    type: list
    elements: path
    default: []
  allowed_roots:
    description:
      - When set, every path taken or restored must lie under one of these directories (after
        resolving symlinks of its parents); anything else is refused before any change.
    type: list
    elements: path
  redis_keys:
    description:
      - Key patterns (Redis C(SCAN MATCH) syntax) to snapshot with O(state=present). Keys are found
        with C(SCAN), never C(KEYS). Every type is supported, with its TTL.
      - On restore, keys that match these patterns now but did not exist at snapshot time are deleted,
        so choose patterns that match configuration keys only, never queues or job data.
      - The C(queueops:events) stream is never included.
      - When empty, the snapshot holds files only and Redis is contacted only to record the event
        (when O(redis_url) or O(sentinel_hosts) is set).
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) takes a snapshot (or finds that the latest equals the current content).
      - V(restored) puts files and keys back as in snapshot O(id) (default the latest).
      - V(absent) deletes snapshot O(id); without O(id) it prunes to O(keep) when O(keep) is set,
        and otherwise deletes every snapshot of O(name).
      - V(query) lists the snapshots of O(name), newest first (only O(id) when it is set).
    type: str
    choices: [present, restored, absent, query]
    default: present
  id:
    description:
      - The snapshot to restore, delete or show. V(latest) or unset means the newest one
        (for O(state=restored) and O(state=query)).
    type: str
  keep:
    description:
      - Keep this many snapshots of O(name) and delete the oldest beyond that, after taking one
        (O(state=present)) or on its own (O(state=absent) without O(id)). At least 1.
    type: int
  reason:
    description: Why the snapshot was taken (for example the release being deployed), shown by O(state=query).
    type: str
  max_files:
    description:
      - The most files, directories and symlinks a snapshot may hold. A snapshot that would hold more
        is refused with a message naming where the limit was crossed, and nothing is written.
      - The walk of the paths stops as soon as the limit is crossed. A glob also looks into at most this
        many directories, and a restore walks at most this many existing paths to find those to remove.
      - At least 1.
    type: int
    default: 10000
  max_bytes:
    description:
      - The most bytes of content (files and the C(DUMP) of keys) a snapshot may hold. A snapshot that
        would hold more is refused with a message naming where the limit was crossed, and nothing is
        written; a file larger than what is left is never read.
      - At least 1. The default is 1 GiB.
    type: int
    default: 1073741824
  keep_new_files:
    description:
      - On restore, keep files and directories created after the snapshot inside a snapshotted
        directory or matching a snapshotted glob. By default they are removed, so the directory is
        exactly as it was.
    type: bool
    default: false
extends_documentation_fragment:
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
notes:
  - Whether a key is already as in the snapshot is decided from its value (sets and hashes compared
    member by member) and whether it has a TTL; the TTL itself decays and is restored to the time
    that was left when the snapshot was taken.
  - Snapshots taken within the same second are ordered by their creation time recorded in the snapshot.
  - A restore changes files first, then runs the one Redis transaction. If Redis fails in between,
    the task fails saying the files were restored and the keys were not; running it again converges.
    If Redis runs the transaction but refuses some of its commands (it does not roll back the others),
    the task fails naming the first refusal, RV(restored) lists exactly the keys Redis applied, and the
    history and the event stream record a C(restore_interrupted).
  - A snapshot of files only never needs the redis Python library.
  - Taking and restoring on a live pool is safe but not a point-in-time copy across files and keys;
    pause the pool's queues first (M(queueops.rollback.queue_pause)) for a consistent snapshot.
  - "Redis ACL: the user needs C(+ping +scan +type +pttl +dump +get +lrange +smembers +hgetall +zrange +multi +exec
    +restore +del +xadd ~<pattern> ~queueops:events). C(<pattern>) stands for each of O(redis_keys) (the glob syntax
    of C(SCAN MATCH) and of ACL key patterns is the same). A snapshot of files only needs C(+ping +xadd
    ~queueops:events) to record its event, and nothing when no connection is given."
seealso:
  - module: queueops.rollback.worker_version
"""

EXAMPLES = r"""
- name: Snapshot the orders pool's config and routing keys before the deploy
  queueops.rollback.config_snapshot:
    name: orders
    paths:
      - /etc/orders/
      - /etc/systemd/system/orders-worker@.service
    redis_keys:
      - "orders:routing:*"
      - "orders:feature:*"
    redis_url: "{{ orders_redis_url }}"
    reason: "deploy 2.4.1"
    keep: 10
  register: orders_snapshot

- name: Put the orders config and keys back as they were before the deploy
  queueops.rollback.config_snapshot:
    name: orders
    state: restored
    id: "{{ orders_snapshot.id }}"
    redis_url: "{{ orders_redis_url }}"

- name: List the snapshots of the orders pool
  queueops.rollback.config_snapshot:
    name: orders
    state: query
  register: snapshots

- name: Keep only the three newest snapshots
  queueops.rollback.config_snapshot:
    name: orders
    state: absent
    keep: 3
"""

RETURN = r"""
id:
  description: The snapshot taken (or found equal), or restored.
  returned: when state is present or restored
  type: str
  sample: 20261124T101500Z-3f2a9c1d
snapshot_path:
  description: Directory of the snapshot on the host (where it is or, in check mode, would be).
  returned: when state is present or restored
  type: str
  sample: /var/lib/queueops/snapshots/orders/20261124T101500Z-3f2a9c1d
snapshot:
  description: Summary of the snapshot taken or found equal (see RV(snapshots) for the fields).
  returned: when state is present
  type: dict
  sample:
    id: 20261124T101500Z-3f2a9c1d
    created: "2026-11-24T10:15:00.412345Z"
    reason: deploy 2.4.1
    size: 18342
    files: 12
    dirs: 3
    keys: 4
    paths: [/etc/orders/]
    redis_keys: ["orders:routing:*"]
    content_digest: 3f2a9c1d0b7e4c55a1e2f3d4c5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0
    host: web-1
previous_id:
  description: The latest snapshot before this run; null when there was none.
  returned: when state is present
  type: str
  sample: 20261123T081200Z-9b1c2d3e
changes:
  description:
    - With O(state=present), what differs from the previous snapshot - C(files_added),
      C(files_changed), C(files_removed), C(keys_added), C(keys_changed), C(keys_removed).
  returned: when state is present
  type: dict
  sample:
    files_added: []
    files_changed: [/etc/orders/app.conf]
    files_removed: []
    keys_added: []
    keys_changed: ["orders:routing:eu"]
    keys_removed: []
restored:
  description:
    - What the restore changed (or would change in check mode) - C(dirs_created), C(files_restored),
      C(files_metadata_fixed), C(files_removed), C(keys_restored), C(keys_deleted).
    - When a restore stops part-way (the task fails), exactly what it changed before it stopped.
  returned: when state is restored
  type: dict
  sample:
    dirs_created: []
    files_restored: [/etc/orders/app.conf]
    files_metadata_fixed: []
    files_removed: []
    keys_restored: ["orders:routing:eu"]
    keys_deleted: []
deleted:
  description: Ids of the snapshots deleted (pruned), or that would be in check mode.
  returned: when state is present or absent
  type: list
  elements: str
  sample: [20261120T090000Z-1a2b3c4d]
snapshots:
  description: The snapshots of O(name), newest first.
  returned: when state is query
  type: list
  elements: dict
  sample: [{"id": "20261124T101500Z-3f2a9c1d", "reason": "deploy 2.4.1", "files": 12, "dirs": 3, "keys": 4}]
  contains:
    id:
      description: Snapshot id, sortable by time.
      type: str
      returned: always
      sample: 20261124T101500Z-3f2a9c1d
    created:
      description: Creation time (UTC, ISO 8601).
      type: str
      returned: when known
      sample: "2026-11-24T10:15:00.412345Z"
    reason:
      description: The O(reason) given when it was taken.
      type: str
      returned: when one was given
      sample: deploy 2.4.1
    size:
      description: Bytes used on disk.
      type: int
      returned: when the summary is readable
      sample: 18342
    files:
      description: Number of files and symlinks.
      type: int
      returned: when the summary is readable
      sample: 12
    dirs:
      description: Number of directories.
      type: int
      returned: when the summary is readable
      sample: 3
    keys:
      description: Number of Redis keys.
      type: int
      returned: when the summary is readable
      sample: 4
    paths:
      description: The O(paths) it was taken with.
      type: list
      elements: str
      returned: when the summary is readable
      sample: [/etc/orders/]
    redis_keys:
      description: The O(redis_keys) patterns it was taken with.
      type: list
      elements: str
      returned: when the summary is readable
      sample: ["orders:routing:*"]
    content_digest:
      description: Digest of what it holds; two snapshots of equal content have the same one.
      type: str
      returned: when the summary is readable
      sample: 3f2a9c1d0b7e4c55a1e2f3d4c5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0
    host:
      description: Host it was taken on.
      type: str
      returned: when the summary is readable
      sample: web-1
    error:
      description: Why the snapshot's summary could not be read (it would be refused on restore).
      type: str
      returned: when the summary is unreadable
      sample: "summary unreadable: No such file or directory"
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import LockHeld
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import new_module
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    REDIS_IMPORT_ERROR,
    RedisConnectionError,
    client_from_params,
    connect,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_diff import restore_diff, take_diff
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_keys import errors_in_words
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    Limits,
    RestoreInterrupted,
    SnapshotError,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_store import (
    apply_restore,
    delete_snapshots,
    list_snapshots,
    plan_restore,
    prune_ids,
    public_summary,
    resolve_id,
    take_snapshot,
    validate_snapshot_name,
)

MODULE = "config_snapshot"
# What each state does, for the words of a Redis refusal ("... needed to read the keys to take snapshot orders").
PURPOSES = {
    "present": "take snapshot {}",
    "restored": "restore snapshot {}",
    "absent": "delete snapshots of {}",
    "query": "list the snapshots of {}",
}


def _printable(value):
    """Results as valid UTF-8: a file name that is not (Python holds it with surrogate escapes)
    is shown with its odd bytes as backslash escapes, as key names are; the controller refuses
    a result that is not valid UTF-8 and would fail a task that did its work."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return value
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return value


OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "root": {"type": "path", "default": "/var/lib/queueops/snapshots"},
    "paths": {"type": "list", "elements": "path", "default": []},
    "allowed_roots": {"type": "list", "elements": "path"},
    "redis_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
    "state": {"type": "str", "choices": ["present", "restored", "absent", "query"], "default": "present"},
    "id": {"type": "str"},
    "keep": {"type": "int"},
    "max_files": {"type": "int", "default": DEFAULT_MAX_FILES},
    "max_bytes": {"type": "int", "default": DEFAULT_MAX_BYTES},
    "reason": {"type": "str"},
    "keep_new_files": {"type": "bool", "default": False},
}


class _Redis:
    """The Redis client, made only when needed (keys to read or write) or wanted (to record the event)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.client = None

    def required(self):
        if self.client is None:
            self.client = connect(self.module)
        return self.client

    def optional(self):
        params = self.module.params
        if self.client is None and (params["redis_url"] or params["sentinel_hosts"] or params["redis_keys"]):
            if REDIS_IMPORT_ERROR is not None:  # a snapshot of files on a host without redis-py
                self.module.warn(f"event not recorded: {missing_required_lib('redis')}")
                return None
            try:
                self.client = client_from_params(params)
            except RedisConnectionError as exc:
                self.module.warn(f"event not recorded: {exc}")
        return self.client

    def record(self, action: str, **details) -> None:
        client = self.optional()
        if client is not None:
            record_or_warn(self.module, client, MODULE, action, **details)


def _present(module: AnsibleModule, redis: _Redis, limits: Limits, result: dict) -> None:
    params = module.params
    client = redis.required() if params["redis_keys"] else None
    taken = take_snapshot(
        params["root"],
        params["name"],
        params["paths"],
        params["redis_keys"],
        client,
        allowed_roots=params["allowed_roots"],
        reason=params["reason"],
        check_mode=module.check_mode,
        limits=limits,
    )
    for warning in taken.warnings:
        module.warn(_printable(warning))
    result.update(
        changed=taken.changed,
        id=taken.snap_id,
        snapshot_path=taken.path,
        snapshot=public_summary(taken.summary),
        previous_id=taken.previous_id,
        changes=taken.changes,
        deleted=[],
    )
    if taken.changed and module._diff:
        result["diff"] = take_diff(taken.previous_id, taken.changes)
    if taken.changed and not module.check_mode:
        redis.record("snapshot_taken", name=params["name"], id=taken.snap_id, reason=params["reason"])
    if params["keep"] is not None:
        would_take = [taken.snap_id] if module.check_mode and taken.changed else []
        doomed = prune_ids(params["root"], params["name"], params["keep"], extra=would_take)
        result["deleted"] = delete_snapshots(params["root"], params["name"], doomed, check_mode=module.check_mode)
        result["changed"] = result["changed"] or bool(result["deleted"])
        if result["deleted"] and not module.check_mode:
            redis.record("snapshots_pruned", name=params["name"], ids=result["deleted"])


def _restored(module: AnsibleModule, redis: _Redis, limits: Limits, result: dict) -> None:
    params = module.params
    plan = plan_restore(
        params["root"],
        params["name"],
        params["id"],
        redis.required,
        keep_new_files=params["keep_new_files"],
        allowed_roots=params["allowed_roots"],
        limits=limits,
    )
    result.update(changed=plan.changed, id=plan.snap_id, snapshot_path=str(plan.snapdir), restored=plan.outline())
    if plan.changed and module._diff:
        result["diff"] = restore_diff(plan)
    if not plan.changed or module.check_mode:
        return
    try:
        apply_restore(plan, params["root"], params["name"], redis.client)
    except RestoreInterrupted as exc:
        result.update(changed=any(exc.done.values()), restored=exc.done)
        redis.record("snapshot_restore_interrupted", name=params["name"], id=plan.snap_id, restored=exc.done)
        raise
    redis.record("snapshot_restored", name=params["name"], id=plan.snap_id, restored=plan.outline())


def _absent(module: AnsibleModule, redis: _Redis, result: dict) -> None:
    params = module.params
    root, name = params["root"], params["name"]
    if params["id"] and params["id"] != "latest":
        doomed = [validate_snapshot_name(params["id"], "id")]
    elif params["id"] == "latest":
        doomed = [item["id"] for item in list_snapshots(root, name)][-1:]
    elif params["keep"] is not None:
        doomed = prune_ids(root, name, params["keep"])
    else:
        doomed = [item["id"] for item in list_snapshots(root, name)]
    deleted = delete_snapshots(root, name, doomed, check_mode=module.check_mode)
    result.update(changed=bool(deleted), deleted=deleted)
    if deleted and module._diff:
        result["diff"] = {"prepared": "".join(f"delete snapshot {name}/{snap_id}\n" for snap_id in deleted)}
    if deleted and not module.check_mode:
        redis.record("snapshots_deleted", name=name, ids=deleted)


def _query(module: AnsibleModule, result: dict) -> None:
    params = module.params
    listed = list_snapshots(params["root"], params["name"])
    if params["id"]:
        wanted = resolve_id(params["root"], params["name"], params["id"])
        listed = [item for item in listed if item["id"] == wanted]
    result["snapshots"] = [public_summary(item) for item in reversed(listed)]


def _input_problem(params: dict) -> str | None:
    with_nul = [p for p in [params["root"], *(params["paths"] or []), *(params["allowed_roots"] or [])] if "\x00" in p]
    if with_nul:
        return f"paths cannot contain a NUL byte: {', '.join(repr(p) for p in with_nul)}"
    return None


def _os_error_text(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def run_module() -> None:
    module = new_module(OPTIONS)
    params = module.params
    result: dict = {"changed": False}
    problem = _input_problem(params)
    if problem:
        module.fail_json(msg=problem)
    redis = _Redis(module)
    try:
        validate_snapshot_name(params["name"])
        limits = Limits(max_files=params["max_files"], max_bytes=params["max_bytes"])
        with errors_in_words(params, PURPOSES[params["state"]].format(params["name"])):
            if params["state"] == "present":
                _present(module, redis, limits, result)
            elif params["state"] == "restored":
                _restored(module, redis, limits, result)
            elif params["state"] == "absent":
                _absent(module, redis, result)
            else:
                _query(module, result)
    except (SnapshotError, LockHeld) as exc:
        module.fail_json(**_printable({**result, "msg": str(exc)}))
    except OSError as exc:
        msg = f"{params['state']} of snapshot {params['name']} failed: {_os_error_text(exc)}"
        module.fail_json(**_printable({**result, "msg": msg}))
    module.exit_json(**_printable(result))


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
