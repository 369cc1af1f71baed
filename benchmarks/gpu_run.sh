#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, after
# benchmarks/fetch_gpu_wheels.sh ran here and with carry: [".whl"]:
#   bash benchmarks/gpu_run.sh
# Runs the whole test suite on the real GPU (no simulator), then the CPU+GPU
# benchmark; writes logs and results to $OUT (or benchmarks/results) and prints a
# short table last.
set -uo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export NUMBA_ENABLE_CUDASIM=0
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-info.txt"
# nd2gpu itself (editable, so nd2gpu.kernels maps to kernels/), no downloads.
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
  >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
python3 benchmarks/bench.py --devices cpu,cuda --tag gpu --out "$out" 2>&1 \
  | tee "$out/gpu-bench.log"
bench_rc=${PIPESTATUS[0]}
echo "tests exit $tests_rc, bench exit $bench_rc"
tail -n 5 "$out/gpu-tests.log"
[ -f "$out/gpu.md" ] && cat "$out/gpu.md"
exit $(( tests_rc || bench_rc ))
