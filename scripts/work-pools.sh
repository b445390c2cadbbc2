#!/usr/bin/env bash
# Create the Prefect work pools that prefect.yaml's deployments name, each only if missing (an existing pool is
# left as it is: `prefect work-pool update NAME --base-job-template FILE` applies a changed template).
# Run from anywhere, with PREFECT_API_URL pointing at the server; then `prefect deploy --no-prompt --all`:
#   bash scripts/work-pools.sh
# Creating a pool needs only prefect; a worker of the docker / kubernetes pool needs the prefect-docker /
# prefect-kubernetes package where it runs. The base job templates are kept in docker/k8s/ (docs/scaling.md).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { prefect work-pool inspect "$1" >/dev/null 2>&1; }

have local-pool || prefect work-pool create local-pool --type process
have senet-docker || prefect work-pool create senet-docker --type docker --base-job-template docker/k8s/work-pool-docker.json
have senet-k8s || prefect work-pool create senet-k8s --type kubernetes --base-job-template docker/k8s/work-pool-kubernetes.json
