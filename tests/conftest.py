"""Shared fixtures: ND2 files written by nd2gpu.write_nd2 and checked against nd2."""

from __future__ import annotations

import ctypes.util
import os
import sys


def _cuda_driver_present() -> bool:
    return ctypes.util.find_library("cuda") is not None or os.path.exists(
        "/dev/nvidiactl"
    )


# Without a GPU the CUDA kernels are tested under numba's simulator. numba reads
# this variable when it is first imported, so it is set before anything imports it.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _cuda_driver_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nd2gpu  # noqa: E402
import nd2gpu.kernels  # noqa: E402
from nd2gpu._write.nd2_writer import write_nd2  # noqa: E402

# .ci/run tests the installed wheel and sdist with ND2GPU_TEST_INSTALLED=1: then
# nd2gpu must come from site-packages, not from a source tree on sys.path.
if os.environ.get("ND2GPU_TEST_INSTALLED") == "1":
    import sysconfig

    _site = os.path.realpath(sysconfig.get_paths()["purelib"])
    for _module in (nd2gpu, nd2gpu.kernels):
        if not os.path.realpath(_module.__file__ or "").startswith(_site + os.sep):
            raise RuntimeError(
                f"ND2GPU_TEST_INSTALLED=1, but {_module.__name__} is imported from "
                f"{_module.__file__}, not from {_site}"
            )


def random_labels(
    rng: np.random.Generator, shape: tuple[int, ...], max_id: int = 300
) -> np.ndarray:
    """Blocky random label images: rectangles of ids on a background of zeros."""
    out = np.zeros(shape, np.uint16)
    frames = out.reshape(-1, *shape[-2:])
    ny, nx = shape[-2:]
    for frame in frames:
        for _ in range(int(rng.integers(0, 8))):
            y0, x0 = rng.integers(0, ny), rng.integers(0, nx)
            h, w = rng.integers(1, ny + 1), rng.integers(1, nx + 1)
            frame[y0 : y0 + h, x0 : x0 + w] = rng.integers(1, max_id + 1)
        if rng.random() < 0.3:
            frame[rng.random(frame.shape) < 0.2] = rng.integers(1, max_id + 1)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


@pytest.fixture
def make_nd2(tmp_path, rng):
    """Write an ND2 file of random labels; returns ``(path, {name: labels})``."""

    def make(
        loops=(("T", 2), ("Z", 3)),
        layers=("cells", "nuclei"),
        frame_shape=(13, 17),
        name="f.nd2",
        max_id=300,
    ):
        counts = tuple(c for _, c in loops)
        labels = {
            layer: random_labels(rng, counts + tuple(frame_shape), max_id)
            for layer in layers
        }
        path = write_nd2(tmp_path / name, labels, loops=list(loops))
        return path, labels

    return make


@pytest.fixture(scope="module")
def fast_thread_switching():
    """A short GIL switch interval, for modules that run CUDA kernels.

    numba's CUDA simulator runs each CUDA thread as a Python thread; they meet at
    barriers, which a shorter switch interval makes several times faster.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-3)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(scope="session")
def process_cluster():
    """A ``dask.distributed`` client of a 2-process ``LocalCluster`` (workers share
    no memory with the tests: every task and result is pickled)."""
    import logging

    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            # A free port for the scheduler's HTTP server (None still takes
            # 8787, which a concurrent test run may hold).
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client
