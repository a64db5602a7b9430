#!/usr/bin/env bash
# The GPU check, one command: the gpu tests, then the GPU figures in
# benchmarks/results/gpu_check.json (copied to $OUT too when set). About 8 minutes on one
# H100 (GPU_CHECK_SECONDS, default 450); nothing is downloaded. It needs torch (CUDA), NumPy, OpenCV and pytorch-msssim; where
# pytorch-msssim is missing it installs the wheel carried in .whl/ (no index is reached). The
# Ray-on-GPU tests run where Ray, MLflow and pydantic import (the machine's own, or the bundle of
# benchmarks/gpu_bundle.py carried as .gpu_bundle/site.tar.xz), else they are left out.
#   bash benchmarks/gpu_check.sh                       # on a GPU node: docs/testing.md
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the repository's packages, installed or not
site=/tmp/gpu-check-site  # what this script adds: the bundle, pytorch-msssim

# Ray, MLflow and pydantic where the machine lacks them: the bundle benchmarks/gpu_bundle.py
# builds, carried as .gpu_bundle/site.tar.xz (nothing is downloaded here).
if ! $PY -c "import ray, mlflow, pydantic" 2>/dev/null && [ -f .gpu_bundle/site.tar.xz ]; then
    [ -f $site/.unpacked ] || { mkdir -p $site && tar -xJf .gpu_bundle/site.tar.xz -C $site && touch $site/.unpacked; }
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    $PY -c "import ray, mlflow, pydantic; print('Ray', ray.__version__, 'and MLflow', mlflow.__version__, 'from the bundle')" \
        || echo "the bundle does not import here: the Ray tests are left out"
fi
if ! $PY -c "import pytorch_msssim" 2>/dev/null; then
    [ -d .whl ] || { echo "pytorch-msssim is missing and no .whl/ folder carries it"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --target $site .whl/*.whl || exit 2
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
markers="gpu and not ray"
if $PY -c "import ray, mlflow, pydantic" 2>/dev/null; then markers="gpu"; fi

# Budget: GPU_CHECK_SECONDS in all (default 450 s); the tests get at most 150 s, the figures the
# rest (the short training shrinks to fit). Results are written after every part, so a run cut
# short keeps what it measured.
budget=${GPU_CHECK_SECONDS:-450}
started=$SECONDS
log=${OUT:+$OUT/gpu_tests.log}
log=${log:-$(mktemp)}
timeout 150 $PY -m pytest -q -rP -p no:cacheprovider -m "$markers" tests/gpu 2>&1 | tee "$log"
tests_status=${PIPESTATUS[0]}
summary=$(grep -E "passed|failed|error" "$log" | tail -n 1)
left=$(( budget - (SECONDS - started) ))
timeout $(( left + 30 )) $PY benchmarks/gpu_check.py --deadline "$left" \
    --tests "[$markers] $summary (status $tests_status)" ${OUT:+--out "$OUT"} "$@"
bench_status=$?
exit $(( tests_status != 0 ? tests_status : bench_status ))
