#!/usr/bin/env bash
# The one prepared GPU run for issue 3's ResNet-18 target (at most 8 minutes: the timeouts
# below add up to 480 s, within one 600 s device command).
#
# Run from the repository root on a CUDA machine that has torch but no decaylab install:
#     OUT=/some/dir bash benchmarks/gpu_curvature.sh
# The comparison tools are installed from wheels in .whl/ when they are there (no network
# needed); without them only decaylab runs. Results land in $OUT:
#   gpu_diagnose.{json,log}     product cost per backend under each cuDNN / memory-format
#                               setting, and eigen under the cheapest one;
#   curvature_cuda.{json,md}    decaylab, curvlinops + eigsh and hessian-eigenthings side by
#                               side on the ResNet-18 with PyTorch's default settings;
#   curvature_cuda_tuned.*      decaylab alone under the setting gpu_diagnose found cheapest.
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
# 1. Where the time goes: gradient and product costs, then eigen under the cheapest setting.
timeout "${DIAGNOSE_TIMEOUT:-170}" python3 benchmarks/gpu_diagnose.py \
    --json "$OUT/gpu_diagnose.json" 2>&1 | tee "$OUT/gpu_diagnose.log"
SETTING=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['cheapest_product']['setting'])" \
    "$OUT/gpu_diagnose.json" 2>/dev/null || echo default)
# 2. Side by side, PyTorch defaults (PyHessian left out: 115 s in issue 3).
TOOLS="decaylab curvlinops+eigsh hessian-eigenthings"
timeout "${RESNET_TIMEOUT:-220}" python3 benchmarks/curvature.py --device cuda --out "$OUT" \
    --workloads cifar_resnet18 --repeats 1 --tools $TOOLS "$@" 2>&1 | tee "$OUT/curvature_cuda.log"
# 3. decaylab alone under the cheapest setting, when it is not the default (the target is
#    an absolute time; curvlinops + eigsh under the defaults, from step 2, is the anchor).
if [ "$SETTING" != "default" ]; then
    timeout "${TUNED_TIMEOUT:-90}" python3 benchmarks/curvature.py --device cuda --out "$OUT" \
        --workloads cifar_resnet18 --repeats 1 --tools decaylab --kernel-setting "$SETTING" \
        --tag cuda_tuned "$@" 2>&1 | tee "$OUT/curvature_cuda_tuned.log"
fi
