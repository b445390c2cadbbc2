#!/usr/bin/env bash
# The README's main command: install, start a local Prefect server (SQLite) and a process worker, deploy,
# run `prefect deployment run train-senet/quickstart --watch` on a real offline dataset, print the leaderboard,
# and stop what it started. A second run with unchanged data finishes in state "Unchanged" without retraining.
#   bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

export PATH="$PWD/.venv/bin:$PATH"
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
# No RAY_AUTH_MODE here: the flow's local Ray runs without auth by itself (senet_dist.train.session), and a
# cluster named by an exported RAY_ADDRESS keeps the auth settings exported with it (docs/security.md).
export RAY_USAGE_STATS_ENABLED=0
export SENET_ARTIFACTS="${SENET_ARTIFACTS:-$PWD/artifacts}"  # the worker's flow runs write here (one default)
DEPLOYMENT="${SENET_DEPLOYMENT:-train-senet/quickstart}"
port="${SENET_PREFECT_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
export PREFECT_API_URL="http://127.0.0.1:${port}/api"
logs="$PREFECT_HOME/logs"; mkdir -p "$logs"

healthy() { python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$PREFECT_API_URL/health" >/dev/null 2>&1; }
server_pid=""; worker_pid=""
stop() {  # SIGTERM, up to 10 s to exit, then SIGKILL (a Prefect 3.8 worker can ignore SIGTERM after a run)
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # Stop the worker before the server: a worker whose server is gone hangs on SIGTERM.
  stop "$worker_pid"
  stop "$server_pid"
}
trap cleanup EXIT

echo "==> starting Prefect server on 127.0.0.1:${port} (logs: $logs)"
prefect server start --host 127.0.0.1 --port "$port" >"$logs/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  healthy && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$logs/server.log"; echo "Prefect server failed to start" >&2; exit 1; }
  sleep 1
done
healthy || { echo "Prefect server not healthy after 120 s" >&2; exit 1; }

echo "==> deploying (prefect.yaml)"
bash scripts/work-pools.sh >"$logs/work-pools.log" 2>&1 || { cat "$logs/work-pools.log"; exit 1; }
prefect deploy --no-prompt --all >"$logs/deploy.log" 2>&1 || { cat "$logs/deploy.log"; exit 1; }

echo "==> starting a process worker"
prefect worker start --pool local-pool --limit 1 >"$logs/worker.log" 2>&1 &
worker_pid=$!

echo "==> prefect deployment run $DEPLOYMENT --watch"
status=0
prefect deployment run "$DEPLOYMENT" --watch --watch-timeout 3600 || status=$?
if [ "$status" != 0 ]; then
  echo "flow run failed; worker log tail:" >&2; tail -n 60 "$logs/worker.log" >&2; exit "$status"
fi

echo "==> leaderboard"
senet-dist report --png "$SENET_ARTIFACTS/leaderboard.png"
echo
echo "Arrow tables: $SENET_ARTIFACTS/{datasets,runs,epochs,evaluations,checkpoints}/*.parquet"
echo "Plots and reports: $SENET_ARTIFACTS/reports/<run_id>/ (confusion_matrix.png, curves.png, report.json)"
echo "Shards: $PWD/data/shards/$(cat data/shards/LATEST 2>/dev/null)"
