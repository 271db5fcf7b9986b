#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: worker_version
short_description: Stage, activate, fail, roll back and prune releases of a worker pool on a host
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Manages side-by-side releases of a worker pool under O(root)/O(pool)/ on the managed host.
    Each release is an immutable directory C(releases/<version>/) with the worker's code and, when
    built from a wheelhouse, its own virtualenv C(venv/) installed with no package index.
  - The symlink C(current) is switched atomically (temporary link + rename), so there is
    no instant without a valid C(current).
  - Every change is appended to C(history.jsonl) (time, action, version, from, to, user, reason). The
    history, never file times, decides which release was the last good one and which releases failed.
  - A rollback is a state, not a step. O(state=rolled_back) with O(version=X) only acts while X is
    current, so re-running it (also after an interrupted run) converges instead of stepping back twice.
  - Before C(current) is switched to a release (by O(state=active) or O(state=rolled_back)), the
    release's files are checked against the content digest recorded when it was staged; a release
    changed on disk since is refused, and nothing changes.
  - A per-pool lock (C(.lock)) stops two runs from changing a pool at once; the second run waits for it at most
    O(lock_timeout) seconds, then fails with a message naming the holder. Across controllers and hosts, the lease of
    M(queueops.rollback.rollout_lease) does the same.
  - This module works on files only; it does not talk to Redis.
extends_documentation_fragment:
  - queueops.rollback.pool
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
  - queueops.rollback.attributes.idempotent
options:
  version:
    description:
      - The release to act on. Same rules as O(pool).
      - Required with O(state=staged), O(state=active), O(state=failed) and O(state=rolled_back).
      - With O(state=absent), remove only this release; without it, prune to O(keep).
    type: str
  state:
    description:
      - V(staged) builds C(releases/<version>) from O(src) in a temporary directory inside C(releases/)
        and renames it into place when complete. An existing release with the same content is left
        alone; different content for an existing version is an error (releases are immutable).
      - V(active) switches C(current) to O(version), staging it first when O(src) is given. A release
        marked failed is never activated again.
      - V(failed) marks O(version) failed, so it is never again a rollback target. It does not switch C(current).
      - V(rolled_back) acts only if O(version) is current; it marks it failed and activates O(to_version),
        or else the newest release that was current before O(version) and is not failed.
        If O(version) is not current, nothing changes.
      - V(absent) removes O(version), or prunes the oldest releases down to O(keep). The current
        release and the last good one before it are never removed.
      - V(query) changes nothing and returns the facts.
    type: str
    choices: [staged, active, failed, rolled_back, absent, query]
    default: active
  src:
    description:
      - On the managed host, what the release is made of. A directory (copied), a C(.tar.gz), C(.tgz)
        or C(.tar) archive (extracted; members with absolute paths, C(..) or links pointing outside the
        release are refused), or, when O(requirements) is given and O(wheelhouse) is not, the wheelhouse.
    type: path
  wheelhouse:
    description:
      - A directory of wheels on the managed host from which O(requirements) are installed into
        C(releases/<version>/venv) with C(pip install --no-index --find-links). Use it when O(src) holds
        the code; when omitted, O(src) is the wheelhouse.
      - The file names and checksums of its packages are part of the release's content.
      - The release's virtualenv has no pip of its own. One pip per O(root) and interpreter, made at the first
        build under C(<root>/.pip/) (C(<venv_python> -m venv)) and shared by the pools of that root, installs
        into each release's with C(pip --python), which saves the seconds C(python -m venv) spends installing
        pip on every deploy.
        When that pip is older than 22.3 (no C(--python)), each release's virtualenv gets its own pip instead.
    type: path
  requirements:
    description:
      - Package specifications (for example V(rq==2.12.0)) installed into the release's own virtualenv,
        only from the wheelhouse, or a single item that is the absolute path of a requirements file on
        the managed host. They are stored in the release as C(.queueops/requirements.txt).
    type: list
    elements: str
  venv_python:
    description:
      - The interpreter that creates the release's virtualenv (C(<venv_python> -m venv)), a name looked up
        in E(PATH) or an absolute path.
    type: str
    default: python3
  queues:
    description:
      - With O(state=staged) or O(state=active), the queues the release's workers consume, kept in
        C(<root>/<pool>/queues/<version>) (one line, the names apart by spaces) before C(current) is switched.
        The file is beside the release, not in it, so the release's content digest stays that of its code.
      - The units of the M(queueops.rollback.worker_release) role read it whenever that release runs, so a rollback
        to an older release brings back the queues it consumed (versioned routing, see the README).
      - Same rules as every module's O(queues) option. Omitted, the file is left as it is.
      - Removing or pruning the release removes its file too.
    type: list
    elements: str
  to_version:
    description:
      - With O(state=rolled_back), the release to return to instead of the last good one. It must be
        staged and not failed.
    type: str
  keep:
    description:
      - With O(state=absent) and no O(version), how many of the newest releases to keep (ordered by the
        history); older ones are removed. The current release and the last good one are always kept, even
        when older, so a pool can hold more than O(keep) releases; a release staged after the current one
        (the next deploy's) is never pruned for their sake. At least 1.
    type: int
    default: 5
  reason:
    description:
      - Free text stored with the history records of this run, for the post-mortem.
    type: str
notes:
  - Check mode reports what would change (RV(actions) and, with C(--diff), the diff) and touches nothing, not even the
    history or the lock file.
  - Release directories, the history and C(current) are created with the permissions of the user running
    the module; give the worker's service read access to O(root).
seealso:
  - module: community.general.deploy_helper
    description: A release/symlink layout without memory of which release was good.
"""

EXAMPLES = r"""
- name: Stage release 2.4.1 of the orders workers from a tarball and its wheelhouse
  queueops.rollback.worker_version:
    pool: orders
    version: 2.4.1
    state: staged
    src: /srv/artifacts/orders-2.4.1.tar.gz
    wheelhouse: /srv/artifacts/wheels
    requirements:
      - orders==2.4.1
      - rq==2.12.0

- name: Switch the orders workers to 2.4.1
  queueops.rollback.worker_version:
    pool: orders
    version: 2.4.1
    state: active
    reason: "deploy {{ tower_job_id | default('manual') }}"

- name: Roll back 2.4.1 (safe to re-run; does nothing once 2.4.1 is no longer current)
  queueops.rollback.worker_version:
    pool: orders
    version: 2.4.1
    state: rolled_back
    reason: health gate failed

- name: Keep the three newest releases (never the current or the last good one)
  queueops.rollback.worker_version:
    pool: orders
    state: absent
    keep: 3

- name: What is current, and what would a rollback return to
  queueops.rollback.worker_version:
    pool: orders
    state: query
  register: orders_releases
"""

RETURN = r"""
current:
  description: The version C(current) points to after the run (or would, in check mode); null if none.
  returned: always
  type: str
  sample: 2.4.1
current_path:
  description: The C(current) symlink of the pool, C(<root>/<pool>/current) (what the worker units run).
  returned: always
  type: str
  sample: /opt/queueops/orders/current
current_release_path:
  description: The directory of the current release, C(<root>/<pool>/releases/<current>); null if none.
  returned: always
  type: str
  sample: /opt/queueops/orders/releases/2.4.1
previous:
  description: The last good release before the current one (the rollback target); null if none.
  returned: always
  type: str
  sample: 2.4.0
releases:
  description: Every release on disk, oldest first in the order they were staged.
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: The release's version.
      type: str
    state:
      description:
        - V(active) (current), V(staged) (never activated), V(superseded) (was current, good),
          V(failed), or V(incomplete) (a directory without a release manifest, never a target).
      type: str
    created:
      description: When the release was staged (UTC, ISO 8601).
      type: str
    activated:
      description: When the release last became current (UTC, ISO 8601); null if never.
      type: str
    digest:
      description: The sha256 content digest of the release (without its virtualenv).
      type: str
  sample:
    - {version: 2.4.0, state: superseded, created: "2024-05-01T10:00:00.000000Z",
       activated: "2024-05-01T10:01:00.000000Z", digest: "sha256:5f1c..."}
actions:
  description: What the run did, or would do in check mode, in order.
  returned: always
  type: list
  elements: str
  sample: ["mark release 2.4.1 failed", "switch current from 2.4.1 to 2.4.0"]
history_file:
  description: The pool's history file.
  returned: always
  type: str
  sample: /opt/queueops/orders/history.jsonl
msg:
  description: A one-line summary.
  returned: always
  type: str
  sample: rolled back orders from 2.4.1 to 2.4.0
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import new_module
from ansible_collections.queueops.rollback.plugins.module_utils.releases import (
    Pool,
    ReleaseError,
    Source,
)

OPTIONS = {
    "pool": {"type": "str", "required": True},
    "root": {"type": "path", "default": "/opt/queueops"},
    "lock_timeout": {"type": "float", "default": 0},
    "version": {"type": "str"},
    "state": {
        "type": "str",
        "default": "active",
        "choices": ["staged", "active", "failed", "rolled_back", "absent", "query"],
    },
    "src": {"type": "path"},
    "wheelhouse": {"type": "path"},
    "requirements": {"type": "list", "elements": "str"},
    "venv_python": {"type": "str", "default": "python3"},
    "queues": {"type": "list", "elements": "str"},
    "to_version": {"type": "str"},
    "keep": {"type": "int", "default": 5},
    "reason": {"type": "str"},
}
REQUIRED_IF = [
    ("state", "staged", ["version"]),
    ("state", "active", ["version"]),
    ("state", "failed", ["version"]),
    ("state", "rolled_back", ["version"]),
]


def _source(module: AnsibleModule) -> Source:
    params = module.params
    wheelhouse, src = params["wheelhouse"], params["src"]
    if params["requirements"] and wheelhouse is None:
        src, wheelhouse = None, src
        if wheelhouse is None:
            raise ReleaseError("requirements need a wheelhouse: set wheelhouse, or src to the wheelhouse directory")
    if wheelhouse is not None and not params["requirements"]:
        raise ReleaseError("wheelhouse is set but requirements are not: say what to install from it")
    for what, path in (("src", src), ("wheelhouse", wheelhouse)):
        if path is not None and not os.path.exists(path):
            raise ReleaseError(f"{what} {path} does not exist on the host")
    python = params["venv_python"]
    if wheelhouse is not None:
        python = module.get_bin_path(python) if "/" not in python else python
        if not python:
            raise ReleaseError(f"venv_python {params['venv_python']!r} was not found on the host")
    return Source(code=src, wheelhouse=wheelhouse, requirements=params["requirements"], python=python)


def _apply(pool: Pool, module: AnsibleModule, source: Source | None) -> str:
    """Do what ``state`` asks; return the summary line."""
    params = module.params
    state, version, reason = params["state"], params["version"], params["reason"]
    if state in ("staged", "active"):
        staged = pool.stage(version, source, reason=reason)
        recorded = bool(params["queues"]) and pool.record_queues(version, params["queues"])
        if state == "staged":
            if staged:
                return f"staged {pool.name} {version}"
            return f"{pool.name} {version} is already staged" + ("; recorded its queues" if recorded else "")
        before = pool.current()
        if pool.activate(version, reason=reason):
            return f"switched {pool.name} from {before} to {version}" if before else f"{pool.name} now runs {version}"
        return f"{pool.name} {version} is already current"
    if state == "failed":
        if pool.mark_failed(version, reason=reason):
            return f"marked {pool.name} {version} failed"
        return f"{pool.name} {version} is already marked failed"
    if state == "rolled_back":
        if pool.rollback(version, to_version=params["to_version"], reason=reason):
            return f"rolled back {pool.name} from {version} to {pool.current()}"
        current = pool.current()
        now = f"current is {current}" if current else "no release is current"
        return f"{pool.name} {version} is not current ({now}): nothing to roll back"
    if version is not None:
        if pool.remove(version, reason=reason):
            return f"removed {pool.name} {version}"
        return f"{pool.name} {version} is already absent"
    removed = pool.prune(params["keep"], reason=reason)
    if removed:
        return f"pruned {pool.name}: removed {', '.join(removed)}"
    return f"{pool.name} has no more than {params['keep']} releases to keep"


def run_module() -> None:
    module = new_module(OPTIONS, redis=False, required_if=REQUIRED_IF)
    params = module.params
    try:
        pool = Pool(params["root"], params["pool"], check_mode=module.check_mode)
        if params["version"] is not None:
            Pool.check_version(params["version"])
        if params["to_version"] is not None:
            _check_to_version(params)
        result = {"changed": False, "actions": [], "history_file": pool.history_path}
        if params["state"] == "query":
            module.exit_json(msg=f"{pool.name}: current is {pool.current()}", **result, **pool.facts())
        source = _source(module) if params["state"] in ("staged", "active") else None
        if source is None:
            ignored = [name for name in ("src", "wheelhouse", "requirements", "queues") if params[name]]
            if ignored:
                module.warn(f"{', '.join(ignored)} only apply to state=staged or state=active; ignored")
        purpose = f"state={params['state']} version={params['version']}"
        with pool.locked(purpose, create=params["state"] in ("staged", "active"), timeout=params["lock_timeout"]):
            before = pool.describe()
            pool.reconcile()
            msg = _apply(pool, module, source)
            facts = pool.facts()
            after = pool.describe()
    except ReleaseError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"filesystem error in {params['root']}/{params['pool']}: {exc}")
    result.update(facts, changed=bool(pool.actions), actions=pool.actions, msg=msg)
    if module._diff and before != after:
        result["diff"] = {"before": before, "after": after, "before_header": pool.dir, "after_header": pool.dir}
    for warning in pool.warnings:
        module.warn(warning)
    module.exit_json(**result)


def _check_to_version(params: dict) -> None:
    if params["state"] != "rolled_back":
        raise ReleaseError("to_version is only used with state=rolled_back")
    Pool.check_version(params["to_version"])


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
