# Sourced by the hack/ scripts and set by the Makefile: where the tools, collections and podman
# configuration of this checkout live. Nothing outside the checkout is configured.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$top/.venv/bin:$PATH"
export CONTAINERS_CONF="$top/.config/containers.conf"
export ANSIBLE_COLLECTIONS_PATH="$top/.cache/collections"
export MOLECULE_GLOB='molecule/*/molecule.yml'
export ANSIBLE_LOCAL_TEMP="$top/.cache/ansible-tmp"
export PYTHONDONTWRITEBYTECODE=1
