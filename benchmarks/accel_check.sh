#!/usr/bin/env bash
# One-shot check on a GPU machine with no network (jax, flax, hypothesis preinstalled):
# the test suite on the installed JAX's CPU backend and on the GPU, then bench_accel.py.
#   OUT=/some/dir bash benchmarks/accel_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/accel_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import jax, flax, hypothesis; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
nvidia-smi -L || true
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
  || { echo "pip install failed; using PYTHONPATH"; export PYTHONPATH=$PWD; }
timeout 60 python3 benchmarks/probe_jax.py 2>&1 | tee "$OUT/probe.log" | tail -12
T=${TEST_TIMEOUT:-240}
PYT="python3 -m pytest -v -p no:cacheprovider --timeout 90 -ra"
(JAX_PLATFORMS=cpu timeout -s INT "$T" $PYT -n 6 > "$OUT/tests_cpu.log" 2>&1) &
timeout -s INT "$T" $PYT -n 3 > "$OUT/tests_gpu.log" 2>&1
wait
for f in tests_cpu tests_gpu; do echo "== $f"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/$f.log" | tail -25; done
timeout -s INT "${BENCH_TIMEOUT:-180}" python3 benchmarks/bench_accel.py --repeats 10 \
  --out "$OUT/RESULTS_accel.md" 2>&1 | grep -v "^\s*$" | grep -E "^\||Device" 
