#!/usr/bin/env bash
# Every GPU benchmark in one call, for a session that has a GPU:
#   1. speed.py: ours vs the reference tsimcne 0.3.12 (ResNet-18 width 64, batch 512),
#      plus our variants (bf16 off, channels-last off, torch.compile);
#   2. one real training epoch over all 60k CIFAR-10 images;
#   3. CIFAR-10 quality: 400/25/75 epochs on all 60k images, kNN on 10k held out.
# Results go to benchmarks/results/*-gpu.md, each naming the GPU (nvidia-smi).
#
# Usage:  bash benchmarks/gpu_all.sh [--quick]
#   --quick  fewer rounds and a 40/3/7-epoch quality run (a smoke test of the script)
# Env:    PY (default .venv/bin/python), REFVENV (default benchmarks/.refvenv; created
#         with setup_reference.sh when missing), TSIMCNE_CIFAR10 (the data).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
REFVENV="${REFVENV:-benchmarks/.refvenv}"
RESULTS=benchmarks/results
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU visible to $PY: nothing to do (CPU results: see benchmarks/README.md)" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
GPU_TAG=$("$PY" -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())" 2>/dev/null || echo gpu)

if [ ! -x "$REFVENV/bin/python" ]; then
    echo "creating the reference venv ($REFVENV) ..."
    REFVENV="$REFVENV" bash benchmarks/setup_reference.sh "$PY" \
        || echo "reference venv failed: speed.py will time ours only" >&2
fi
REFERENCE=none
[ -x "$REFVENV/bin/python" ] && REFERENCE="$REFVENV"

ROUNDS=3; STEPS=20; EPOCHS=400,25,75
if [ "$QUICK" = 1 ]; then ROUNDS=1; STEPS=5; EPOCHS=40,3,7; fi

echo "== 1+2. speed (ours vs reference) and one 60k-image epoch"
"$PY" benchmarks/speed.py --device cuda --batch 512 --rounds "$ROUNDS" --steps "$STEPS" \
    --warmup 5 --reference "$REFERENCE" --ref-workers 8 --epoch-timing all \
    --out "$RESULTS/speed-gpu-$GPU_TAG.md"

echo "== 3. CIFAR-10 quality, $EPOCHS epochs, all 60k images"
"$PY" benchmarks/quality.py cifar --subset all --epochs "$EPOCHS" --batch 512 --device cuda \
    --out "$RESULTS/quality-gpu-$GPU_TAG.md"

echo "done: $RESULTS/speed-gpu-$GPU_TAG.md $RESULTS/quality-gpu-$GPU_TAG.md"
