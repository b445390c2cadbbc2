#!/usr/bin/env bash
# senet-dist container entrypoint (installed as senet-entrypoint).
# One image plays several roles so that every Ray node and the Prefect worker share exactly the same Python,
# torch, Ray and senet-dist versions (Ray refuses to connect mismatched versions).
#   ray-head        Ray head node (GCS + dashboard); no CPUs/GPUs advertised by default so no training lands on it
#   ray-worker      Ray worker node joining $RAY_ADDRESS; advertises the GPUs/CPUs the container sees
#   prefect-server  Prefect API + UI on 0.0.0.0:${PREFECT_SERVER_API_PORT:-4200}, basic auth on
#   prefect-worker  joins the Ray cluster as a small CPU node (the flow is the Ray driver and needs a local
#                   raylet), then runs a Prefect process worker polling $PREFECT_WORK_POOL
#   prefect-deploy  one-shot: create the work pools if missing (scripts/work-pools.sh), register prefect.yaml
#   ray-driver CMD  join $RAY_ADDRESS as a small CPU node, then exec CMD (a Prefect Kubernetes flow-run pod:
#                   `senet-entrypoint ray-driver prefect flow-run execute`, see docs/kuberay.md)
#   anything else   exec'd as is (e.g. `senet-dist train ...`, `prefect server start ...`, `bash`)
# Extra arguments after a role are passed to the underlying `ray start` / `prefect` command.
#
# Every role refuses to start, with one line naming the variable, when a secret it needs is unset, empty or still a
# `change-me` placeholder (docker/.env.example), or when any variable of its environment holds a placeholder (a
# database URL built from one, say): Ray roles need RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or
# a file named by RAY_AUTH_TOKEN_PATH); Prefect clients need PREFECT_API_AUTH_STRING and the server
# PREFECT_SERVER_API_AUTH_STRING, both user:password (docs/security.md). Secret values are never printed.
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

placeholder() {  # true when $1 is a change-me placeholder (any case), anywhere in the value
  [[ "${1,,}" == *change-me* ]]
}

require_secret() {
  local var
  for var in "$@"; do
    require "$var"
    ! placeholder "${!var}" || die "$var is still a change-me placeholder: set a real secret (docs/security.md)"
  done
}

no_placeholders() {  # nothing in the environment may carry a placeholder into a connection string or a config
  local var
  while IFS= read -r var; do
    ! placeholder "${!var:-}" || die "$var holds a change-me placeholder: set a real secret (docs/security.md)"
  done < <(compgen -e)
}

require_auth_string() {  # Prefect's basic auth string, user:password
  require_secret "$1"
  [[ "${!1}" == ?*:?* ]] || die "$1 must have the form user:password (docs/security.md)"
}

require_ray_token() {  # every Ray node and driver of our clusters: token auth, and the cluster's token
  [ "${RAY_AUTH_MODE:-}" = token ] \
    || die "RAY_AUTH_MODE must be 'token' for role '$role' (got '${RAY_AUTH_MODE:-}'): our Ray clusters run with token authentication (docs/security.md)"
  if [ -n "${RAY_AUTH_TOKEN+x}" ] || [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    require_secret RAY_AUTH_TOKEN
    return
  fi
  [ -r "$RAY_AUTH_TOKEN_PATH" ] || die "RAY_AUTH_TOKEN_PATH names $RAY_AUTH_TOKEN_PATH, which cannot be read"
  local token
  token="$(<"$RAY_AUTH_TOKEN_PATH")"
  [ -n "$token" ] || die "RAY_AUTH_TOKEN_PATH names an empty file ($RAY_AUTH_TOKEN_PATH)"
  ! placeholder "$token" || die "RAY_AUTH_TOKEN_PATH names a file holding a change-me placeholder: set a real token"
}

require_prefect_client() {  # a client of a Prefect server (PREFECT_API_URL) sends its auth string
  require PREFECT_API_URL
  require_auth_string PREFECT_API_AUTH_STRING
}

role="${1:-}"
[ -n "$role" ] || die "no command given; roles: ray-head, ray-worker, prefect-server, prefect-worker, prefect-deploy, ray-driver, or a command"

case "$role" in
  ray-head | ray-worker | prefect-server | prefect-worker | prefect-deploy | ray-driver) no_placeholders ;;
esac

case "$role" in
  ray-head)
    shift
    require_ray_token
    export SENET_ROLE=ray-head
    exec ray start --head --block --disable-usage-stats \
      --port="${RAY_GCS_PORT:-6379}" \
      --dashboard-host=0.0.0.0 \
      --num-cpus="${RAY_HEAD_NUM_CPUS:-0}" --num-gpus=0 "$@"
    ;;
  ray-worker)
    shift
    require RAY_ADDRESS
    require_ray_token
    export SENET_ROLE=ray-worker
    exec ray start --address="$RAY_ADDRESS" --block --disable-usage-stats "$@"
    ;;
  prefect-server)
    shift
    require_auth_string PREFECT_SERVER_API_AUTH_STRING
    export SENET_ROLE=prefect-server
    exec prefect server start --host 0.0.0.0 --port "${PREFECT_SERVER_API_PORT:-4200}" "$@"
    ;;
  prefect-worker)
    shift
    require RAY_ADDRESS
    require_ray_token
    require_prefect_client
    export SENET_ROLE=prefect-worker
    ray start --address="$RAY_ADDRESS" --disable-usage-stats \
      --num-cpus="${PREFECT_WORKER_RAY_CPUS:-1}" --num-gpus=0
    exec prefect worker start --pool "${PREFECT_WORK_POOL:-local-pool}" --type process --with-healthcheck "$@"
    ;;
  prefect-deploy)
    shift
    require_prefect_client
    bash /app/scripts/work-pools.sh  # every pool prefect.yaml names, each only if missing
    exec prefect deploy --no-prompt --all "$@"
    ;;
  ray-driver)
    shift
    require RAY_ADDRESS
    [ "$#" -gt 0 ] || die "role ray-driver needs a command to run, e.g. prefect flow-run execute"
    require_ray_token
    [ -z "${PREFECT_API_URL:-}" ] || require_prefect_client  # a flow run reports to its server
    export SENET_ROLE=ray-driver
    ray start --address="$RAY_ADDRESS" --disable-usage-stats \
      --num-cpus="${RAY_DRIVER_CPUS:-1}" --num-gpus=0
    exec "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
