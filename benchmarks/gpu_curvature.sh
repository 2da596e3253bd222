#!/usr/bin/env bash
# The one prepared GPU run of the curvature benchmark (issue 3, ResNet-18 workload).
#
# Run from the repository root on a CUDA machine that has torch but no decaylab install:
#     OUT=/some/dir bash benchmarks/gpu_curvature.sh
# The comparison tools are installed from wheels in .whl/ when they are there (no network
# needed); without them only decaylab runs. Results land in $OUT as curvature_cuda.{json,md}.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=src
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:src
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    | tee "$OUT/nvidia_smi.txt"
python3 -c "import torch, scipy, numpy; print('torch', torch.__version__, 'scipy', scipy.__version__, 'numpy', numpy.__version__)"
# ResNet-18 first, in its own process, so its results are written whatever happens next.
timeout "${RESNET_TIMEOUT:-330}" python3 benchmarks/curvature.py --device cuda --out "$OUT" \
    --workloads cifar_resnet18 "$@" 2>&1 | tee "$OUT/curvature_cuda.log"
# The two CPU workloads on the GPU as well (cheap there), with all four tools.
timeout "${SMALL_TIMEOUT:-150}" python3 benchmarks/curvature.py --device cuda --out "$OUT" \
    --workloads digits_mlp mnist1d_cnn --tag cuda_small 2>&1 | tee "$OUT/curvature_cuda_small.log"
