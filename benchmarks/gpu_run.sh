#!/usr/bin/env bash
# One command for a GPU machine: the benchmark first, then the tests, in at most
# 6.5 minutes. ON the GPU machine (device tool: carry [".whl"], after
# benchmarks/fetch_gpu_wheels.sh ran here; timeout_s 420), from the repository
# root:
#
#   bash benchmarks/gpu_run.sh                # benchmark, then tests
#   bash benchmarks/gpu_run.sh --bench-only   # or --tests-only
#
# Stages, each under its own `timeout` and all within 390 s of the start (a
# stage gets what is left when that is less than its own limit):
#   1. install (60 s): the carried wheels into /tmp/site (on PYTHONPATH), then
#      nd2gpu, editable (nd2gpu.kernels maps to kernels/), built without the
#      network by the carried setuptools (>= 77, for the SPDX license field; the
#      image's may be older);
#   2. check (30 s): versions, nvidia-smi, CUDA usable (else the run stops);
#   3. benchmark (240 s): gpu_bench.py, which starts nothing after 200 s and
#      writes gpu.json and gpu.md after every section;
#   4. GPU tests (150 s): the test files that use CUDA, CuPy, torch or dask-cuda
#      (fuzzing left out); a test skipped there for want of a GPU fails the run;
#   5. other tests (what is left): the other files, neither slow nor fuzzing.
# A stage that runs out of time is interrupted (pytest still reports what it
# ran) and the run goes on. What comes back in $OUT (else benchmarks/results),
# four files: run.log (everything printed, a summary last), gpu.json, gpu.md,
# gpu-tests.log. A machine takes 1-2 minutes to start: 2 + 6.5 + 6.5 minutes, a
# second full run fits in the 15 minutes of device time a session gets while
# the machine is still warm; after a fresh start, rerun one part (--bench-only,
# --tests-only).
#
# HERE, without a GPU, rehearse it first so the GPU minutes go to measuring:
#
#   bash benchmarks/gpu_run.sh --dry-run
#
# downloads the wheels (fetch_gpu_wheels.sh), checks the carry budget, builds a
# stand-in for the GPU image in /tmp (its Python 3.12, numpy 2.5, numba,
# numba-cuda and an older setuptools; no GPU libraries), installs the wheels and
# nd2gpu exactly as on the GPU machine, and runs the same stages under numba's
# CUDA simulator: the benchmark at tiny sizes, both test stages in full. Its
# stage limits are 5 times the GPU's (the simulator, a small machine).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu tests=1 bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry ;;
    --tests-only) bench=0 ;;
    --bench-only) tests=0 ;;
    *) echo "usage: $0 [--dry-run] [--tests-only|--bench-only]" >&2
       exit 2 ;;
  esac
  shift
done

#: Seconds: the whole run, and each stage's own limit.
TOTAL=390 INSTALL=60 CHECK=30 BENCH=240 GPU_TESTS=150
#: The dry run's limits are this many times the GPU's.
DRY_SCALE=5
#: What the benchmark may start: up to this many seconds before its stage's end.
BENCH_MARGIN=40
#: Test files of the GPU stage: those that use CUDA, CuPy, torch or dask-cuda.
GPU_TEST_PATTERN='needs_cuda|REAL_GPU|cupy|dask_cuda|torch'

export PYTHON="${PYTHON:-python3}" MODE=$mode
if [ "$mode" = dry ]; then
  OUT_DIR="${OUT:-$(mktemp -d /tmp/nd2gpu-dry-run.XXXXXX)}"
else
  OUT_DIR="${OUT:-benchmarks/results}"
fi
mkdir -p "$OUT_DIR"
export OUT_DIR
WORK=$(mktemp -d /tmp/nd2gpu-run.XXXXXX)
export WORK

say() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- the stages
# Each runs as `bash -c NAME` under `timeout`, which interrupts it (SIGINT to
# its process group; `tee -i` outlives that so pytest's report still gets out).

install_stage() {
  rm -rf "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl || return 1
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || return 1
}

check_stage() {
  "$PYTHON" - <<'PY' || return 1
import importlib, os, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ["setuptools", "numpy", "numba", "numba_cuda", "cuda.bindings", "cupy",
             "torch", "nd2", "dask", "distributed", "dask_cuda", "zarr", "isal",
             "skimage", "cucim", "nd2gpu"]:
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}  {module.__file__}")
    except Exception as exc:  # a report: the stages after this one decide
        print(f"{name} not importable: {type(exc).__name__}: {exc}")
from nd2gpu._device import cuda_status
ok, why = cuda_status()
print("cuda:", ok, why)
if os.environ["MODE"] == "gpu" and not ok:
    sys.exit("CUDA is not usable: nothing to measure")
PY
  # Conflicts between the carried wheels and the image (a report only).
  "$PYTHON" -m pip check 2>&1 | grep -v "^No broken" || true
  if [ "$MODE" = gpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
      --format=csv || return 1
  fi
}

bench_stage() {
  local budget=$(( STAGE_LIMIT - BENCH_MARGIN ))
  [ "$budget" -gt 0 ] || budget=1
  local dry=()
  [ "$MODE" = dry ] && dry=(--dry-run)
  "$PYTHON" benchmarks/gpu_bench.py "${dry[@]}" --out "$OUT_DIR" \
    --budget-s "$budget" 2>&1 | tee -i "$WORK/bench.log"
  return "${PIPESTATUS[0]}"
}

tests_stage() {  # tests_stage NAME MARKS FILE...
  local name=$1 marks=$2
  shift 2
  printf '\n== %s\n' "$name" >>"$OUT_DIR/gpu-tests.log"
  "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs -m "$marks" \
    --continue-on-collection-errors --timeout "$TEST_TIMEOUT" \
    --junitxml="$WORK/$name.xml" "$@" 2>&1 \
    | tee -i -a "$OUT_DIR/gpu-tests.log"
  return "${PIPESTATUS[0]}"
}

export -f install_stage check_stage bench_stage tests_stage
export BENCH_MARGIN

summary=()
failed=0
stage() {  # stage NAME LIMIT COMMAND...: COMMAND within min(LIMIT, time left)
  local name=$1 cap=$(( $2 * SCALE ))
  shift 2
  local left=$(( DEADLINE - SECONDS ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 10 ]; then
    say "$name: not run (the run's $(( TOTAL * SCALE )) s are spent)"
    summary+=("$name: not run, no time left")
    failed=1
    return 1
  fi
  say "$name (at most $limit s)"
  local start=$SECONDS rc
  STAGE_LIMIT=$limit timeout -s INT -k 20 "$limit" "$@"
  rc=$?
  local took=$(( SECONDS - start ))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    summary+=("$name: interrupted at its limit ($limit s)")
  else
    summary+=("$name: exit $rc in $took s")
  fi
  [ "$rc" = 0 ] || failed=1
  return "$rc"
}

gpu_skips() {  # a test skipped ON the GPU machine for want of a GPU is a failure
  "$PYTHON" - "$WORK/gpu-tests.xml" "$MODE" <<'PY'
import os, re, sys
import xml.etree.ElementTree as ET
if not os.path.exists(sys.argv[1]):
    sys.exit("no report from the GPU tests")
skips = [
    (case.get("classname"), case.get("name"), s.get("message", ""))
    for case in ET.parse(sys.argv[1]).getroot().iter("testcase")
    for s in case.findall("skipped")
]
print(f"{len(skips)} GPU-stage tests skipped:")
for cls, name, why in skips:
    print(f"  {cls}::{name}: {why}")
gpu = [s for s in skips if re.search(r"GPU|CuPy|cupy|torch|dask_cuda|not usable", s[2])]
if sys.argv[2] == "gpu" and gpu:
    sys.exit(f"{len(gpu)} GPU tests skipped ON the GPU machine")
PY
}

# ------------------------------------------------------------------ the run

dry_run_setup() {  # wheels, carry budget, the stand-in image (not timed)
  say "wheels for the GPU machine"
  bash benchmarks/fetch_gpu_wheels.sh || return 1
  # The device tool carries the tracked and untracked-not-ignored files and
  # .whl/, 64 MiB in all.
  local tree carried
  tree=$(git ls-files -z --cached --others --exclude-standard \
    | du -cb --files0-from=- 2>/dev/null | tail -n1 | cut -f1)
  carried=$(( tree + $(du -sb .whl | cut -f1) ))
  echo "carried: $(( carried / 1048576 )) MiB of 64 MiB"
  [ "$carried" -lt $(( 64 * 1048576 )) ] || { echo "over the carry budget"; return 1; }

  say "a stand-in for the GPU image"
  local py312=
  for candidate in python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12 \
      "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
        2>/dev/null; then
      py312=$candidate
      break
    fi
  done
  [ -n "$py312" ] || { echo "no Python 3.12 here (the GPU machine's)"; return 1; }
  local image=/tmp/nd2gpu-gpu-image
  # What the GPU image has that nd2gpu's tests use, at its versions where they
  # matter (numpy 2.5, numba 0.68, numba-cuda 0.30.4; a setuptools older than 77
  # stands in for one that cannot read the SPDX license field), without CuPy,
  # torch or a driver; and NVRTC, which numba-cuda needs and this machine's
  # /usr/local/cuda lacks. NVVM and ptxas come from /usr/local/cuda, as there.
  local packages=(numpy==2.5.2 numba==0.68.0 numba-cuda==0.30.4 setuptools==70.2.0
    wheel pytest pytest-timeout hypothesis pandas scikit-image pyarrow tifffile
    fsspec aiohttp tqdm toolz cloudpickle pyyaml click packaging
    typing_extensions psutil msgpack sortedcontainers urllib3 jinja2
    "nvidia-cuda-nvrtc==13.0.*")
  local stamp="${packages[*]}"
  if [ ! -x "$image/bin/python3" ] || [ "$(cat "$image/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$image"
    "$py312" -m venv "$image" || return 1
    "$image/bin/python3" -m pip install -q "${packages[@]}" || return 1
    echo "$stamp" >"$image/.stamp"
  fi
  "$image/bin/python3" -c 'import numpy, setuptools, sys
print("stand-in:", sys.version.split()[0], "numpy", numpy.__version__, "setuptools", setuptools.__version__)'
}

main() {
  if [ "$mode" = dry ]; then
    dry_run_setup || { echo "gpu_run: the dry run's setup failed" >&2; return 1; }
    export PYTHON=/tmp/nd2gpu-gpu-image/bin/python3 SITE=/tmp/nd2gpu-dry-site
    export NUMBA_ENABLE_CUDASIM=1 SCALE=$DRY_SCALE
  else
    [ -d .whl ] || { echo "gpu_run: no .whl/: run benchmarks/fetch_gpu_wheels.sh here and carry .whl" >&2; return 1; }
    export SITE=/tmp/site NUMBA_ENABLE_CUDASIM=0 SCALE=1
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export TEST_TIMEOUT=$(( 120 * SCALE ))
  DEADLINE=$(( SECONDS + TOTAL * SCALE ))
  echo "gpu_run ($mode run): results in $OUT_DIR; $(( TOTAL * SCALE )) s in all"

  stage install "$INSTALL" bash -c install_stage || { summarize; return 1; }
  stage check "$CHECK" bash -c check_stage || { summarize; return 1; }
  [ "$bench" = 1 ] && stage benchmark "$BENCH" bash -c bench_stage
  if [ "$tests" = 1 ]; then
    local gpu_files other_files
    # The GPU stage's files, the PTX builds (which need no GPU) last.
    mapfile -t gpu_files < <(grep -lE "$GPU_TEST_PATTERN" tests/test_*.py \
      | awk '/kernels_ptx/ { last = $0; next } { print } END { if (last) print last }')
    mapfile -t other_files < <(ls tests/test_*.py | grep -vxF -f <(printf '%s\n' "${gpu_files[@]}"))
    : >"$OUT_DIR/gpu-tests.log"
    stage "GPU tests" "$GPU_TESTS" bash -c 'tests_stage gpu-tests "not fuzz" "$@"' _ \
      "${gpu_files[@]}"
    gpu_skips || { summary+=("GPU tests: skipped for want of a GPU"); failed=1; }
    stage "other tests" "$TOTAL" bash -c 'tests_stage other-tests "not slow and not fuzz" "$@"' _ \
      "${other_files[@]}"
  fi
  summarize
  return "$failed"
}

summarize() {
  say "summary ($mode run, $SECONDS s; results in $OUT_DIR)"
  printf '  %s\n' "${summary[@]}"
  if [ -f "$OUT_DIR/gpu-tests.log" ]; then
    grep -E '^(=+ )?[0-9]+ (passed|failed)|^FAILED|^ERROR' "$OUT_DIR/gpu-tests.log" || true
  fi
  [ -f "$OUT_DIR/gpu.md" ] && { echo; cat "$OUT_DIR/gpu.md"; }
}

main 2>&1 | tee "$OUT_DIR/run.log"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
