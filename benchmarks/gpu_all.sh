#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md (model train step: our SE-ResNets vs timm, eager and compiled; end to end: training
# from shards vs synthetic data), one step after another, teed to one log that docs/performance.md quotes.
#
# Made for a GPU host that has torch, torchvision, timm and pyarrow but not this package's other dependencies
# (the project's lent H100): the package runs from the checkout (PYTHONPATH), and when webdataset is missing the
# wheels in $WHEELS (default .whl; see docs/performance.md for the two to download) go to /tmp/site first.
# Ray and Prefect are not needed: the scripts time the per-worker train step and the loader directly.
#
# Usage: benchmarks/gpu_all.sh [LOG]      default LOG: $OUT/gpu-benchmarks.log if OUT is set, else ./gpu-benchmarks-DATE.log
#   STEPS="models e2e" ...                 a subset (names: models models_compile gpu gpu_compile se_block e2e)
#   SMOKE=1 ...                            tiny sizes on the CPU: checks the script itself, measures nothing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
LOG=${1:-${OUT:+$OUT/gpu-benchmarks.log}}
LOG=${LOG:-gpu-benchmarks-$(date +%Y%m%d-%H%M%S).log}
STEPS=" ${STEPS:-models models_compile gpu gpu_compile se_block e2e} "

if ! "$PY" -c "import webdataset" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHEELS:-.whl}"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

if [[ ${SMOKE:-0} == 1 ]]; then  # same commands, sizes a 2-core CPU finishes in a few minutes
  DEV=cpu; B=4; PX=64; STEPS_N=2; REP=1; IMAGES=64; LW=1; GPU_DECODE=--gpu-decode
  MODELS_OPTS=(--threads 1 --only se_resnet18 seresnet18)
else
  DEV=cuda; B=256; PX=224; STEPS_N=60; REP=5; IMAGES=8192; LW=12; GPU_DECODE=--gpu-decode
  MODELS_OPTS=()
fi

step() {  # step NAME CMD...: run CMD when NAME is in $STEPS, with a header the docs can quote
  local name=$1; shift
  [[ $STEPS == *" $name "* ]] || return 0
  echo; echo "## \$ $*"
  echo "# started $(date -Is), load average: $(cut -d' ' -f1-3 /proc/loadavg)," \
       "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo no GPU)"
  "$@"
}

E2E=("$PY" benchmarks/e2e.py --device "$DEV" --model se_resnet50 --batch "$B" --image-size "$PX" --images "$IMAGES"
     --steps "$STEPS_N")
{
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  step models "$PY" benchmarks/models.py --device "$DEV" --batch "$B" --size "$PX" --channels-last --amp bf16 \
    --repeats "$REP" "${MODELS_OPTS[@]}"
  step models_compile "$PY" benchmarks/models.py --device "$DEV" --batch "$B" --size "$PX" --channels-last \
    --amp bf16 --repeats "$REP" --compile "${MODELS_OPTS[@]}"
  step gpu "$PY" benchmarks/gpu.py --device "$DEV" --models se_resnet50,se_resnet18 --batch-size "$B" \
    --image-size "$PX" --steps "$STEPS_N"
  step gpu_compile "$PY" benchmarks/gpu.py --device "$DEV" --models se_resnet50,se_resnet18 --batch-size "$B" \
    --image-size "$PX" --steps "$STEPS_N" --compile
  step se_block "$PY" benchmarks/se_block.py --device "$DEV" --batch "$B" --size "$PX" --tables 1,3
  step e2e "${E2E[@]}" --loader-workers "$LW"
  [[ -n $GPU_DECODE ]] && step e2e "${E2E[@]}" --loader-workers "$LW" $GPU_DECODE
  [[ -n $GPU_DECODE ]] && step e2e "${E2E[@]}" --loader-workers 2 $GPU_DECODE   # ~2 cores per GPU
  step e2e "${E2E[@]}" --loader-workers "$LW" --resize 0                          # originals, not pre-resized
  true
} 2>&1 | tee "$LOG"
echo "log: $LOG"
