#!/usr/bin/env bash
# Run the CPU benchmarks one after another (never in parallel: they would time each other) and tee everything
# to one log. Usage: benchmarks/run_all.sh [LOG]   (default: benchmarks-<date>.log in the current directory)
# Each benchmark prints markdown tables; docs/performance.md quotes them verbatim.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOG=${1:-benchmarks-$(date +%Y%m%d-%H%M%S).log}
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore

STEPS=" ${STEPS:-se_block models gpu data reader e2e orchestration} "

step() {  # step NAME CMD...: run CMD when NAME is in $STEPS
  local name=$1; shift
  [[ $STEPS == *" $name "* ]] && run "$@"
  return 0
}

run() {
  echo; echo "## \$ $*"; echo "# started $(date -Is), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$@"
}

reader_profile() {
  # py-spy over the shard reader in one process (num_workers=0), so every sample is the reading/decoding path.
  local dir; dir=$(mktemp -d)
  "$PY" - "$dir" <<'EOF'
import sys, tempfile
from pathlib import Path
sys.path.insert(0, "benchmarks")
from data import make_photos
from senet_dist.data import ShardConfig, shard_dataset
out = Path(sys.argv[1])
make_photos(out / "photos", 400, (500, 375))
for name, resize in (("s256", 256), ("sorig", None)):
    shard_dataset(out / "photos", out / name, ShardConfig(resize_shorter=resize, fractions=(0.98, 0.01, 0.01),
                                                          progress=False, max_count=200, num_procs=1))
EOF
  for name in s256 sorig; do
    "$(dirname "$PY")/py-spy" record --rate 200 --format raw -o "$dir/$name.txt" -- "$PY" - "$dir/$name" <<'EOF' >/dev/null 2>&1
import sys, time, torch
from senet_dist.data import LoaderConfig, make_loader
torch.set_num_threads(1)
cfg, c0, n = LoaderConfig(batch_size=32, image_size=224, num_workers=0), time.process_time(), 0
for _ in range(8):
    for x, _ in make_loader(sys.argv[1], "train", cfg):
        n += len(x)
print(f"{n} images, {1000 * (time.process_time() - c0) / n:.2f} CPU ms/img")
EOF
    echo "### shard reader profile, $name (py-spy, 1 process, 8 epochs of 392 images)"
    "$PY" - "$dir/$name.txt" <<'EOF'
import sys
from collections import Counter
# Deepest matching frame wins: each sample is charged to one stage of the reading path.
STAGES = [("imports triggered inside the loop", ("_find_and_load", "_call_with_frames_removed")),
          ("JPEG/PNG decode (torchvision.io)", ("decode_image", "decode_jpeg")),
          ("crop + resize + flip (transforms v2)", ("transforms/v2", "functional/_geometry")),
          ("normalise (trainer side)", ("Normalizer",)), ("collate (torch.stack)", ("uint8_collate",)),
          ("tar parsing + sample grouping (webdataset)", ("tariterators", "tarfile", "iter_shard")),
          ("shuffle buffer", ("_shuffled",))]
by_stage, leaves, total, reading = Counter(), Counter(), 0, 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip().rpartition(" ")
    frames, n = stack.split(";"), int(count)
    total += n
    if not any("__iter__ (" in f and ("loader.py" in f or "stream.py" in f) for f in frames):
        continue  # interpreter start-up, imports, set-up: not inside the loader's iteration
    reading += n
    leaves[frames[-1].split(" (")[0] or "(native)"] += n
    for frame in reversed(frames):
        stage = next((s for s, keys in STAGES if any(k in frame for k in keys)), None)
        if stage:
            by_stage[stage] += n
            break
    else:
        by_stage["other (Python glue: DataLoader, ShardStream, Loader)"] += n
print(f"inside the loader iteration: {reading / total:.0%} of all samples (the rest: start-up, imports, set-up); shares below are of those")
print("| stage | share |\n|---|---|")
for stage, n in by_stage.most_common():
    print(f"| {stage} | {n / reading:.1%} |")
print("top leaf functions: " + ", ".join(f"{k} {v / reading:.1%}" for k, v in leaves.most_common(6)))
EOF
  done
  rm -rf "$dir"
}

{
  echo "# senet-dist CPU benchmarks, $(date -Is), $(getconf _NPROCESSORS_ONLN) CPUs, $(uname -n), git $(git rev-parse --short HEAD)"
  step se_block "$PY" benchmarks/se_block.py --size 64 --batch 8 --repeats 5 --steps 3 --iters 10
  step models "$PY" benchmarks/models.py --threads 1 --batch 8 --size 64 --steps 5 --repeats 3 --channels-last
  step gpu "$PY" benchmarks/gpu.py --device cpu --steps 5 --models se_resnet18,se_resnet50
  step data "$PY" benchmarks/data.py
  step reader reader_profile
  step e2e "$PY" benchmarks/e2e.py --resize 256
  step e2e "$PY" benchmarks/e2e.py --resize 0
  step e2e "$PY" benchmarks/e2e.py --resize 256 --gpu-decode
  step orchestration "$PY" benchmarks/orchestration.py --repeats 2
} 2>&1 | grep --line-buffered -v -E "httpcore2|^USDT|gpuGetDeviceCount|pid=[0-9]+\)|INFO worker.py" | tee "$LOG"
