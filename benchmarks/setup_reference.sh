#!/usr/bin/env bash
# Create benchmarks/.refvenv with the reference implementation, `tsimcne` 0.3.12, for
# benchmarks/speed.py --reference.
#
# Why 0.3.12: releases 0.4.20-0.4.24 fail in `fit` out of the box (a missing `use_ffcv`
# attribute, then an unexpected `warmup` argument); 0.3.12 is the newest that trains.
# The reference gets exactly the torch/torchvision of the project's own venv, so a
# speed comparison measures the code, not the library versions.
#
# Usage:  bash benchmarks/setup_reference.sh [PROJECT_PYTHON]
#   PROJECT_PYTHON  interpreter of the project venv (default .venv/bin/python); its
#                   torch/torchvision versions are pinned into the reference venv.
# Env:    REFVENV   where to create it (default benchmarks/.refvenv)
#         PYTHON    interpreter used to create it (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT_PYTHON="${1:-.venv/bin/python}"
REFVENV="${REFVENV:-benchmarks/.refvenv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$PROJECT_PYTHON" ]; then
    echo "no project interpreter at $PROJECT_PYTHON: run 'make venv' first or pass its path" >&2
    exit 1
fi
# Local version labels (+cu130, +cpu) name the wheel's build; pip resolves the same build
# from the same index, so only the public version is pinned.
read -r TORCH_VERSION TORCHVISION_VERSION < <(
    "$PROJECT_PYTHON" -c "import torch, torchvision; print(torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])"
)
echo "reference venv: $REFVENV (torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION tsimcne==0.3.12)"

if [ ! -x "$REFVENV/bin/python" ]; then
    "$PYTHON" -m venv "$REFVENV"
fi
"$REFVENV/bin/python" -m pip install -q --upgrade pip
"$REFVENV/bin/python" -m pip install -q \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "tsimcne==0.3.12"
"$REFVENV/bin/python" -c "import tsimcne, torch, lightning; print('ok: torch', torch.__version__, 'lightning', lightning.__version__)"
