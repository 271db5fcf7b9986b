#!/usr/bin/env bash
# Build the collection tarball as Galaxy would and install it into a scratch collections path.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
out=$(mktemp -d /tmp/queueops-build.XXXXXX)
trap 'rm -rf "$out"' EXIT
ansible-galaxy collection build --force --output-path "$out" . >/dev/null
tarball=$(ls "$out"/queueops-rollback-*.tar.gz)
# Only the scratch path is configured, so the checkout's own link cannot satisfy the install.
export ANSIBLE_COLLECTIONS_PATH="$out/installed"
ansible-galaxy collection install --offline -p "$out/installed" "$tarball" >/dev/null
test -f "$out/installed/ansible_collections/queueops/rollback/MANIFEST.json"
ansible-doc -l queueops.rollback >/dev/null
echo "built and installed $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
