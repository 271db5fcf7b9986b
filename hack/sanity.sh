#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection at ansible_collections/queueops/rollback (the
# layout ansible-test requires), with the sanity tests that can run on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
top=$PWD
site=$(.venv/bin/python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" "$site/_internal/python_requirements.py" | head -n1)
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cmp -s hack/ansible-test-get-pip.py "$cache" 2>/dev/null || cp hack/ansible-test-get-pip.py "$cache"

# Outside this git checkout: inside it, ansible-test would ask git for the files and find none.
tmp=$(mktemp -d /tmp/queueops-sanity.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
work=$tmp/ansible_collections/queueops/rollback
mkdir -p "$work"
{ git ls-files -z; git ls-files -z --others --exclude-standard; } | tar --null -T - -cf - | tar -C "$work" -xf -
cd "$work"
# Tests skipped here: 'shebang' and 'shellcheck' judge hack/ scripts that are not part of the built
# collection (build_ignore), 'pylint' duplicates ruff and take minutes to set up.
"$top/.venv/bin/ansible-test" sanity --python 3.11 --color no \
  --skip-test pylint --skip-test shellcheck --skip-test shebang "$@"

# The modules' floor is Python 3.9 (tests/config.yml): compile and import them with a 3.9 as well,
# when the machine has one (pyenv's, or on PATH).
py39=$(ls -d ~/.pyenv/versions/3.9.*/bin 2>/dev/null | tail -n1 || true)
if PATH="${py39:+$py39:}$PATH" command -v python3.9 >/dev/null; then
  PATH="${py39:+$py39:}$PATH" "$top/.venv/bin/ansible-test" sanity --python 3.9 --color no \
    --test compile --test import "$@"
else
  echo "Python 3.9 not found: the modules were compiled and imported with Python 3.11 only"
fi
