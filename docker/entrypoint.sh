#!/usr/bin/env bash
# senet-dist container entrypoint (installed as senet-entrypoint).
# One image plays several roles so that every Ray node and the Prefect worker share exactly the same Python,
# torch, Ray and senet-dist versions (Ray refuses to connect mismatched versions).
#   ray-head        Ray head node (GCS + dashboard); no CPUs/GPUs advertised by default so no training lands on it
#   ray-worker      Ray worker node joining $RAY_ADDRESS; advertises the GPUs/CPUs the container sees
#   prefect-worker  joins the Ray cluster as a small CPU node (the flow is the Ray driver and needs a local
#                   raylet), then runs a Prefect process worker polling $PREFECT_WORK_POOL
#   prefect-deploy  one-shot: create the work pools if missing (scripts/work-pools.sh), register prefect.yaml
#   ray-driver CMD  join $RAY_ADDRESS as a small CPU node, then exec CMD (a Prefect Kubernetes flow-run pod:
#                   `senet-entrypoint ray-driver prefect flow-run execute`, see docs/kuberay.md)
#   anything else   exec'd as is (e.g. `senet-dist train ...`, `prefect server start ...`, `bash`)
# Extra arguments after a role are passed to the underlying `ray start` / `prefect` command.
set -euo pipefail

die() {
  echo "senet-entrypoint: $*" >&2
  exit 64
}

require() {
  local var
  for var in "$@"; do
    [ -n "${!var:-}" ] || die "environment variable $var must be set for role '$role'"
  done
}

role="${1:-}"
[ -n "$role" ] || die "no command given; roles: ray-head, ray-worker, prefect-worker, prefect-deploy, ray-driver, or a command"

case "$role" in
  ray-head)
    shift
    export SENET_ROLE=ray-head
    exec ray start --head --block --disable-usage-stats \
      --port="${RAY_GCS_PORT:-6379}" \
      --dashboard-host=0.0.0.0 \
      --num-cpus="${RAY_HEAD_NUM_CPUS:-0}" --num-gpus=0 "$@"
    ;;
  ray-worker)
    shift
    require RAY_ADDRESS
    export SENET_ROLE=ray-worker
    exec ray start --address="$RAY_ADDRESS" --block --disable-usage-stats "$@"
    ;;
  prefect-worker)
    shift
    require RAY_ADDRESS PREFECT_API_URL
    export SENET_ROLE=prefect-worker
    ray start --address="$RAY_ADDRESS" --disable-usage-stats \
      --num-cpus="${PREFECT_WORKER_RAY_CPUS:-1}" --num-gpus=0
    exec prefect worker start --pool "${PREFECT_WORK_POOL:-local-pool}" --type process --with-healthcheck "$@"
    ;;
  prefect-deploy)
    shift
    require PREFECT_API_URL
    bash /app/scripts/work-pools.sh  # every pool prefect.yaml names, each only if missing
    exec prefect deploy --no-prompt --all "$@"
    ;;
  ray-driver)
    shift
    require RAY_ADDRESS
    [ "$#" -gt 0 ] || die "role ray-driver needs a command to run, e.g. prefect flow-run execute"
    export SENET_ROLE=ray-driver
    ray start --address="$RAY_ADDRESS" --disable-usage-stats \
      --num-cpus="${RAY_DRIVER_CPUS:-1}" --num-gpus=0
    exec "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
