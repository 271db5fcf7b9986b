#!/usr/bin/env bash
# `make test`: set up what is missing, then every check, then a one-screen summary.
# A failing stage does not stop the later ones (the summary shows them all); the exit code is
# non-zero when any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
logs=.cache/test-logs
mkdir -p "$logs"

stages=() results=() seconds=() details=()
record_stage() {  # name, detail-extractor, rc, seconds
  stages+=("$1"); results+=("$([ "$3" = 0 ] && echo ok || echo "FAILED (rc $3)")"); seconds+=("$4")
  details+=("$($2 "$logs/$1.log")")
}
run_stage() {  # name, detail-extractor, command...
  local name=$1 extract=$2; shift 2
  local start=$SECONDS rc
  printf '\n==> %s\n' "$name"
  "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  record_stage "$name" "$extract" "$rc" $((SECONDS - start))
  return "$rc"
}
# The static checks (ruff, ansible-lint, sanity, the build) run one after the other beside pytest,
# in the part of the two cores its workers leave idle while they wait on workers and Redis; each
# one's output is shown once pytest is over.
run_beside() {  # name, command...
  local name=$1 start=$SECONDS; shift
  "$@" >"$logs/$name.log" 2>&1
  echo "$? $((SECONDS - start))" >"$logs/$name.done"
}
collect_beside() {  # name, detail-extractor
  local name=$1 extract=$2 rc secs
  while [ ! -s "$logs/$name.done" ]; do sleep 1; done
  read -r rc secs <"$logs/$name.done"
  printf '\n==> %s (ran beside pytest)\n' "$name"
  cat "$logs/$name.log"
  record_stage "$name" "$extract" "$rc" "$secs"
}
last_line() { grep -v "^[[:space:]]*$" "$1" | tail -n1 | cut -c1-70; }
pytest_counts() { grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$1" | tail -n1 | sed -E 's/^=+ //; s/ =+$//'; }
molecule_counts() {
  { grep -E '^=+ .*(passed|failed).* in [0-9.]+s' "$1" | sed -E 's/^=+ //; s/ in [0-9.]+s.*//'
    grep -E 'Molecule executed' "$1" | sed -E 's/\x1b\[[0-9;]*m//g; s/.*Molecule executed //' | tail -n1
  } | paste -sd';' - | sed 's/;/; /g'
}
lint_counts() { grep -E '^(Passed|Failed):' "$1" | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-70; }
sanity_counts() { echo "$(grep -c '^Running sanity test' "$1") sanity tests run"; }

total_start=$SECONDS
if ! run_stage setup last_line env QUEUEOPS_IMAGE_LATER=1 hack/bootstrap.sh; then
  echo "set-up failed: see $logs/setup.log" >&2
  exit 1
fi
# Only Molecule needs the container image: on a fresh machine it is built (debootstrap, a few
# minutes) while lint, sanity and pytest run, and the molecule stage waits for it.
rm -f "$logs/image.rc"
(hack/build-image.sh >"$logs/image-build.log" 2>&1; echo $? >"$logs/image.rc") &
image_ready() {
  while [ ! -s "$logs/image.rc" ]; do sleep 1; done
  cat "$logs/image-build.log"
  return "$(cat "$logs/image.rc")"
}
rm -f "$logs"/{ruff,ansible-lint,sanity,build}.done
(
  run_beside ruff bash -c 'ruff check . && ruff format --check .'
  run_beside ansible-lint env NO_COLOR=1 ansible-lint
  run_beside sanity hack/sanity.sh
  run_beside build hack/build-and-install.sh
) &
run_stage pytest pytest_counts python -m pytest --color=no -n 2 --dist loadfile
collect_beside ruff last_line
collect_beside ansible-lint lint_counts
collect_beside sanity sanity_counts
collect_beside build last_line
run_stage image last_line image_ready
run_stage molecule molecule_counts env NO_COLOR=1 molecule test --all

passed=0 failed=0
for log in "$logs/pytest.log" "$logs/molecule.log"; do
  for kind in passed failed error; do
    n=$(grep -E '^=+ .* in [0-9.]+s' "$log" 2>/dev/null | grep -oE "[0-9]+ $kind" | awk '{s+=$1} END {print s+0}')
    if [ "$kind" = passed ]; then passed=$((passed + n)); else failed=$((failed + n)); fi
  done
done

printf '\n%s\n' "================================ make test summary ================================"
status=0
for i in "${!stages[@]}"; do
  printf '  %-13s %-14s %5ss  %s\n' "${stages[$i]}" "${results[$i]}" "${seconds[$i]}" "${details[$i]}"
  [ "${results[$i]}" = ok ] || status=1
done
printf '  %-13s %-14s %5ss  logs in %s\n' total "$([ $status = 0 ] && echo ok || echo FAILED)" $((SECONDS - total_start)) "$logs"
echo "tests: $passed passed, $failed failed"
[ "${results[${#results[@]}-1]}" = ok ] || python -m tests.support.failed_tasks "$logs/molecule.log" | sed 's/^/  failed play: /'
exit $status
