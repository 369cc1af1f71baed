#!/usr/bin/env bash
# One command for the real thing. ON the GPU machine (device tool, carry: [".whl"],
# after benchmarks/fetch_gpu_wheels.sh ran here), from the repository root:
#
#   bash benchmarks/gpu_run.sh                # tests, then the GPU benchmark
#   bash benchmarks/gpu_run.sh --tests-only   # or --bench-only; --frames N
#
# 1. installs the carried wheels (.whl/) into /tmp/site (on PYTHONPATH) and nd2gpu
#    itself (editable: nd2gpu.kernels maps to kernels/), without the network;
# 2. runs the whole test suite on the GPU (NUMBA_ENABLE_CUDASIM=0: CuPy, DLPack
#    with torch, dask-cuda's LocalCUDACluster, the kernels built by ptxas), and
#    fails if a test that needs a GPU was skipped;
# 3. runs benchmarks/gpu_bench.py (--frames, default 64 per workload).
# Logs and results (gpu.json, gpu.md, junit XML) go to $OUT (or
# benchmarks/results); a short summary is printed last.
#
# HERE, without a GPU, rehearse it first so the GPU minutes go to measuring:
#
#   bash benchmarks/gpu_run.sh --dry-run
#
# downloads the wheels (fetch_gpu_wheels.sh), checks the carry budget, builds a
# stand-in for the GPU image (Python 3.12 with the image's numpy 2.5, numba and
# numba-cuda, no GPU libraries) in /tmp, installs the wheels exactly as on the GPU
# machine, and runs the same test suite and the benchmark's every step under
# numba's CUDA simulator at tiny sizes. Only what needs a device is left out.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu tests=1 bench=1 frames=64
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry ;;
    --tests-only) bench=0 ;;
    --bench-only) tests=0 ;;
    --frames) frames="$2"; shift ;;
    *) echo "usage: $0 [--dry-run] [--tests-only|--bench-only] [--frames N]" >&2
       exit 2 ;;
  esac
  shift
done

PYTHON="${PYTHON:-python3}"
site=/tmp/site
if [ "$mode" = dry ]; then
  out="${OUT:-$(mktemp -d /tmp/nd2gpu-dry-run.XXXXXX)}"
else
  out="${OUT:-benchmarks/results}"
fi
mkdir -p "$out"
say() { printf '\n== %s\n' "$*"; }
fail() { echo "gpu_run: $*" >&2; exit 1; }

if [ "$mode" = dry ]; then
  say "wheels for the GPU machine"
  bash benchmarks/fetch_gpu_wheels.sh || fail "fetch_gpu_wheels.sh failed"
  # The device tool carries the working tree and .whl/ in 64 MiB together.
  carried=$(( $(du -sb .whl | cut -f1) + $(git ls-files -z | du -cb --files0-from=- | tail -n1 | cut -f1) ))
  echo "carried: $(( carried / 1048576 )) MiB of 64 MiB"
  [ "$carried" -lt $(( 64 * 1048576 )) ] || fail "over the 64 MiB carry budget"

  say "a stand-in for the GPU image (Python 3.12, numpy 2.5, numba, numba-cuda)"
  py312=
  for candidate in python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12 \
      "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
        2>/dev/null; then
      py312=$candidate
      break
    fi
  done
  [ -n "$py312" ] || fail "no Python 3.12 here (the GPU machine's): install one"
  image=/tmp/nd2gpu-gpu-image
  # What the GPU image has that nd2gpu's tests use, not CuPy, torch or a driver:
  # the packages of the first GPU run (typing_extensions comes with torch there,
  # psutil, msgpack, ... were there for distributed), and NVRTC, which numba-cuda
  # needs to compile and this machine's /usr/local/cuda lacks. NVVM and ptxas
  # come from /usr/local/cuda, as there.
  image_packages=(numpy==2.5.2 numba==0.68.0 numba-cuda==0.30.4 pytest hypothesis
    pytest-timeout pandas tifffile fsspec toolz cloudpickle pyyaml click
    packaging typing_extensions psutil msgpack sortedcontainers urllib3 jinja2
    "nvidia-cuda-nvrtc==13.0.*" setuptools wheel)
  stamp="${image_packages[*]}"
  if [ ! -x "$image/bin/python3" ] || [ "$(cat "$image/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$image"
    "$py312" -m venv "$image" || fail "cannot make $image"
    "$image/bin/python3" -m pip install -q "${image_packages[@]}" \
      || fail "cannot install the stand-in image"
    echo "$stamp" >"$image/.stamp"
  fi
  PYTHON="$image/bin/python3"
  site=/tmp/nd2gpu-dry-site
  export NUMBA_ENABLE_CUDASIM=1
else
  export NUMBA_ENABLE_CUDASIM=0
fi

say "install (no network)"
if [ -d .whl ]; then
  rm -rf "$site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl >"$out/install.log" 2>&1 \
    || { cat "$out/install.log"; fail "installing .whl/ failed"; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif [ "$mode" = gpu ]; then
  fail "no .whl/: run benchmarks/fetch_gpu_wheels.sh here and carry .whl"
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
  >>"$out/install.log" 2>&1 || { cat "$out/install.log"; fail "installing nd2gpu failed"; }
export PYTHONUNBUFFERED=1
"$PYTHON" - <<'PY' 2>&1 | tee "$out/versions.txt"
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ["numpy", "numba", "numba_cuda", "cupy", "torch", "nd2", "dask",
             "distributed", "dask_cuda", "zarr", "isal", "nd2gpu"]:
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}  {module.__file__}")
    except Exception as exc:  # a report, not a check: the tests decide
        print(f"{name} not importable: {type(exc).__name__}: {exc}")
from nd2gpu._device import cuda_status
print("cuda:", cuda_status())
PY
if [ "$mode" = gpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    | tee "$out/gpu-info.txt"
fi

tests_rc=0 bench_rc=0
if [ "$tests" = 1 ]; then
  say "tests ($([ "$mode" = dry ] && echo "numba's CUDA simulator" || echo GPU))"
  "$PYTHON" -m pytest -q -p no:cacheprovider -rs --junitxml="$out/tests.xml" tests \
    2>&1 | tee "$out/gpu-tests.log"
  tests_rc=${PIPESTATUS[0]}
  # On the GPU machine a test skipped for want of a GPU is a failure.
  "$PYTHON" - "$out/tests.xml" "$mode" <<'PY' || tests_rc=1
import re
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
skips = [
    (case.get("classname"), case.get("name"), s.get("message", ""))
    for case in root.iter("testcase")
    for s in case.findall("skipped")
]
print(f"{len(skips)} skipped:")
for cls, name, why in skips:
    print(f"  {cls}::{name}: {why}")
needs_gpu = re.compile(r"GPU|CuPy|cupy|torch|dask_cuda|not usable")
gpu_skips = [s for s in skips if needs_gpu.search(s[2])]
if sys.argv[2] == "gpu" and gpu_skips:
    print(f"{len(gpu_skips)} GPU tests skipped ON the GPU machine", file=sys.stderr)
    sys.exit(1)
PY
fi

if [ "$bench" = 1 ]; then
  if [ "$mode" = dry ]; then
    say "benchmark (dry run: every step under the simulator, tiny sizes)"
    "$PYTHON" benchmarks/gpu_bench.py --dry-run --out "$out" 2>&1 \
      | tee "$out/gpu-bench.log"
  else
    say "benchmark ($frames frames per workload)"
    "$PYTHON" benchmarks/gpu_bench.py --frames "$frames" --out "$out" 2>&1 \
      | tee "$out/gpu-bench.log"
  fi
  bench_rc=${PIPESTATUS[0]}
fi

say "summary ($mode run; results in $out)"
[ "$tests" = 1 ] && tail -n 3 "$out/gpu-tests.log"
[ "$bench" = 1 ] && [ -f "$out/gpu.md" ] && cat "$out/gpu.md"
echo "tests exit $tests_rc, bench exit $bench_rc"
exit $(( tests_rc || bench_rc ))
