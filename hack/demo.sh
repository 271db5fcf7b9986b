#!/usr/bin/env bash
# `make demo`: a sandbox fleet (Redis and 3 systemd worker containers on an internal network, 2 RQ
# workers each, a load generator at 20 tasks/s), release 1.0.0 deployed under load, then the
# rollback drill (playbooks/drill.yml): the bad 1.2.0 fails its health gate and rolls back by itself.
# Prints the report; writes .cache/demo/report.{json,html}; exits non-zero when a task was lost or
# the fleet did not end on 1.0.0. The fleet stays up for a look around: `make demo-clean` removes it.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
demo=.cache/demo
log=$demo/demo.log
hack/bootstrap.sh > /tmp/queueops-demo-setup.log 2>&1 || { cat /tmp/queueops-demo-setup.log; exit 1; }
source hack/env.sh
export MOLECULE_GLOB='demo/molecule/*/molecule.yml'
export ANSIBLE_CALLBACKS_ENABLED=queueops.rollback.timeline
export QUEUEOPS_TIMELINE_PATH=$top/$demo/timeline.json
rm -rf "$demo" && mkdir -p "$demo"
start=$SECONDS

step() {  # title, molecule action
  printf '==> %s\n' "$1"
  rm -f "$demo/timeline.json"
  python hack/demo_progress.py --dir "$demo" & local progress=$!
  NO_COLOR=1 molecule "$2" -s demo-rq >> "$log" 2>&1; local rc=$?
  kill "$progress" 2>/dev/null; wait "$progress" 2>/dev/null
  [ -t 1 ] && printf '\r\033[K'
  return "$rc"
}

molecule destroy -s demo-rq > "$log" 2>&1
# molecule create also runs the scenario's prepare: 1.0.0 deployed, the load generator started.
step "building the sandbox fleet (Redis, 3 systemd worker hosts over SSH) and deploying 1.0.0 under load" create \
  || { tail -40 "$log"; exit 1; }
step "the drill: 1.0.0 again, then the bad 1.2.0; its health gate must fail and the rollback run by itself" converge
rc=$?
if [ -f "$demo/report.json" ]; then
  python hack/demo_progress.py --dir "$demo" --report
  printf '\nreport: %s/%s/report.html (timeline: %s/%s/timeline.json)\n' "$top" "$demo" "$top" "$demo"
else
  tail -60 "$log"
fi
printf 'log: %s/%s; the fleet is still up (make demo-clean removes it); %d s in all\n' "$top" "$log" $((SECONDS - start))
exit "$rc"
