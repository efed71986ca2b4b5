#!/usr/bin/env bash
# Issue 18's GPU run, prepared for one call of the device tool (jax 0.11, flax, torch,
# pytest-xdist preinstalled; no network). About 8-9 minutes:
#   tests/test_precision.py on the GPU (<= TESTS_TIMEOUT s), then bench_accel.py: genomics CNN
#   (4096, 512) and VGG16 (128, 16) at highest, split_tf32, split_bf16 and None against the
#   gradient x input floor at TF32 and at highest, DeepLIFT-SHAP (20 shuffles) at each
#   precision, and a profiler trace of each split mode (genomics, 4096).
# Device tool:  run(command="OUT=$OUT bash benchmarks/accel_check.sh", timeout_s=590)
# Results: $OUT/RESULTS_accel.md (rows written as measured), $OUT/*.log, $OUT/profile_*.tgz.
# CPU check of the same script:  SKIP_INSTALL=1 bash benchmarks/accel_check.sh --smoke
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/accel_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
$PY -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
nvidia-smi -L 2>/dev/null || true
if [ -n "${SKIP_INSTALL:-}" ]; then :  # already installed (a developer's venv)
else $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
  || { echo "pip install failed; using PYTHONPATH"; export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}; }
fi
if [ "${1:-}" = "--smoke" ]; then
  exec timeout -s INT "${BENCH_TIMEOUT:-1200}" $PY benchmarks/bench_accel.py --smoke \
    --out "$OUT/RESULTS_accel.md"
fi
# tests first (their own time limit), then the benchmark with what is left of ~570 s
timeout -s INT "${BENCH_TIMEOUT:-560}" $PY benchmarks/bench_accel.py \
  --parts tests,speed,shap --tests-timeout "${TESTS_TIMEOUT:-130}" --tests-workers 6 \
  --repeats 10 --shap-n 8192 --shap-chunk 2048 --profile-dir "$OUT" \
  --out "$OUT/RESULTS_accel.md" 2>&1 | tee "$OUT/bench.log" | grep -E "^\||^#|Device|tests|Total"
echo "exit ${PIPESTATUS[0]}"
