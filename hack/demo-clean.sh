#!/usr/bin/env bash
# `make demo-clean`: remove what `make demo` made: the sandbox fleet (containers, network, the run's
# SSH key, the load generator) and .cache/demo. The image and .venv stay (make test shares them).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/molecule ]; then
  source hack/env.sh
  MOLECULE_GLOB='demo/molecule/*/molecule.yml' molecule destroy -s demo-rq > /dev/null 2>&1 || true
fi
for name in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep '^qo-demo-'); do podman rm -f "$name" > /dev/null; done
podman network exists qo-demo-rq 2>/dev/null && podman network rm -f qo-demo-rq > /dev/null
rm -rf .cache/demo
echo "the demo's fleet and files are gone"
