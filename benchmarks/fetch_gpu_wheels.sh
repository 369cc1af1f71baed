#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before a GPU session: downloads into .whl/ the
# wheels that the GPU machine lacks, for its Python (3.12). That machine has no
# network; it has CuPy, numba, numba-cuda, torch, pytest, hypothesis, pandas,
# scikit-image, ... but no nd2. .whl/ is ignored by git; the device tool carries
# it (carry: [".whl"]) within 64 MiB for everything it carries (gpu_run.sh
# --dry-run checks the budget). One version of each package: two stop the
# install.
#
# - nd2 and its dependencies, isal, dask and distributed;
# - the exports' zarr, yaozarrs and ome-zarr-models (tests import them), at the
#   versions CI resolves (ome-zarr-models pins pydantic below 2.13);
# - dask-cuda (LocalCUDACluster), pinned with the dask and distributed it was
#   released for (rapids-dask-dependency 26.10 pins 2026.7.1); nvidia-ml-py
#   provides its pynvml;
# - setuptools >= 77, which reads the SPDX license field of pyproject.toml:
#   gpu_run.sh builds nd2gpu with it (the image's may be older);
# - numpy below 2.5: the GPU image has numpy 2.5, which removed np.row_stack,
#   and numba-cuda (0.30.4 and older) fails to compile any kernel without it;
# - cuCIM (cucim-cu13, for the objects benchmark; its cucim.skimage needs only
#   CuPy, scikit-image, SciPy and lazy_loader, which the image has).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  nd2==0.12.0 ome-types resource-backed-dask-array isal \
  pydantic==2.12.5 pydantic-core==2.41.5 pydantic-extra-types==2.11.1 \
  annotated-types typing-inspection xsdata partd locket \
  dask==2026.7.1 distributed==2026.7.1 tblib zict tornado \
  zarr==3.1.6 numcodecs==0.16.6 donfig google-crc32c msgspec \
  yaozarrs==0.3.4 ome-zarr-models==1.7 pydantic-zarr==0.9.2 \
  dask-cuda==26.10.0 nvidia-ml-py \
  setuptools==84.2.1 \
  numpy==2.4.6 \
  cucim-cu13==26.10.0
du -sh .whl
