#!/usr/bin/env bash
# `make ee`: the execution environment's build context (no image is built: there is no registry
# here). Usage: hack/ee-context.sh [OUTPUT_DIR]   (default .cache/ee/context)
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
out=${1:-.cache/ee/context}
mkdir -p .cache/ee
build=$(mktemp -d /tmp/queueops-ee.XXXXXX)
trap 'rm -rf "$build"' EXIT
ansible-galaxy collection build --force --output-path "$build" . >/dev/null
cp "$build"/queueops-rollback-*.tar.gz .cache/ee/queueops-rollback.tar.gz
rm -rf "$out"
ansible-builder create -f execution-environment.yml -c "$out" --output-filename Containerfile >/dev/null
echo "execution environment context in $out (podman build -f $out/Containerfile $out)"
