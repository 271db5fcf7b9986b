#!/usr/bin/env bash
# Everything `make test` and `make demo` need on a fresh Debian machine, each step skipped when
# it is already done: apt packages, the .venv with the pinned dev requirements, the collections
# the tests use (taken from the PyPI `ansible` wheel, not Galaxy), the collection itself made
# importable as queueops.rollback, and the local container image.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
ansible_wheel_version=12.3.0            # the `ansible` release that ships ansible-core 2.19
wanted_collections=(containers/podman)  # only what the tests use
apt_packages=(podman runc debootstrap redis-server postgresql python3-venv git openssh-client chromium)
# openssh-client: Molecule reaches its hosts over SSH; chromium: the drill report's page is opened headless
# postgresql: the transactional task's tests run a real PostgreSQL server (its binaries only; no cluster is used)

say() { printf '  %-12s %s\n' "$1" "$2"; }

# --- apt packages -----------------------------------------------------------------------------
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them as root:  apt-get install -y ${missing[*]}" >&2
    echo "(podman needs root here; run 'make test' as root, or install the packages first)" >&2
    exit 1
  fi
  say apt "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say apt "present"
fi

# --- virtualenv -------------------------------------------------------------------------------
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say venv "installing requirements-dev.txt"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import ansible, ansible_runner, molecule, redis, rq, celery' 
  echo "$want" >"$stamp"
else
  say venv "present"
fi

# --- collections from the ansible wheel ---------------------------------------------------------
collections=.cache/collections/ansible_collections
wheel_dir=.cache/wheels
need_unpack=()
for c in "${wanted_collections[@]}"; do
  [ -f "$collections/$c/MANIFEST.json" ] || need_unpack+=("$c")
done
if ((${#need_unpack[@]})); then
  wheel=$(ls "$wheel_dir"/ansible-"$ansible_wheel_version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    say collections "downloading the ansible $ansible_wheel_version wheel for ${need_unpack[*]}"
    .venv/bin/pip download -q --no-deps --disable-pip-version-check -d "$wheel_dir" "ansible==$ansible_wheel_version" 2>&1 \
      | grep -v '^WARNING: Location' || true
    wheel=$(ls "$wheel_dir"/ansible-"$ansible_wheel_version"-*.whl | head -n1)
  fi
  .venv/bin/python - "$wheel" .cache/collections "${need_unpack[@]}" <<'PY'
import sys, zipfile
wheel, dest, *wanted = sys.argv[1:]
prefixes = tuple(f"ansible_collections/{c}/" for c in wanted)
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if m.startswith(prefixes)]
    zf.extractall(dest, members)
print(f"  {'collections':<12} unpacked {len(members)} files of {', '.join(wanted)}")
PY
  rm -rf "$wheel_dir"  # the 54 MB wheel is not needed once unpacked
else
  say collections "present"
fi
mkdir -p "$collections/queueops"
if [ "$(readlink "$collections/queueops/rollback" 2>/dev/null)" != "../../../.." ]; then
  ln -sfn ../../../.. "$collections/queueops/rollback"
fi

# --- container image ----------------------------------------------------------------------------
# `make test` builds it beside the checks that do not need it (QUEUEOPS_IMAGE_LATER=1, hack/test.sh).
if [ -n "${QUEUEOPS_IMAGE_LATER:-}" ]; then
  say image "left to hack/test.sh, which builds it beside the first checks"
elif command -v podman >/dev/null; then
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$top/.config/containers.conf}
  hack/build-image.sh | sed -u 's/^image /  image        /'
fi
