#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a GPU session: downloads into .whl/ the
# wheels that the GPU machine lacks (it has CuPy, numba, numba-cuda, torch,
# pytest, hypothesis, pandas, ... but no nd2 and no network). .whl/ is ignored by
# git; the device tool carries it (carry: [".whl"]), within a 64 MiB budget for
# everything it carries: only what the image lacks, for its Python (3.12).
#
# numpy is pinned below 2.5: the GPU image has numpy 2.5, which removed
# np.row_stack, and numba-cuda (0.30.4 and older) fails to compile any kernel
# without it.
# dask-cuda (LocalCUDACluster) is pinned with the dask and distributed it was
# released for (rapids-dask-dependency 26.10 pins 2026.7.1); nvidia-ml-py
# provides its pynvml.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  nd2==0.12.0 ome-types resource-backed-dask-array isal pydantic \
  pydantic-core annotated-types typing-inspection xsdata partd locket \
  dask==2026.7.1 distributed==2026.7.1 tblib zict tornado \
  zarr numcodecs donfig google-crc32c msgspec \
  dask-cuda==26.10.0 nvidia-ml-py \
  numpy==2.4.6
du -sh .whl
