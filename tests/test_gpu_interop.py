"""Decoded layers in other GPU libraries, on a real GPU: PyTorch through DLPack
and ``__cuda_array_interface__``, and dask-cuda's ``LocalCUDACluster``.

benchmarks/gpu_run.sh runs these on the GPU machine (which has torch; dask-cuda
comes in the wheels of benchmarks/fetch_gpu_wheels.sh) and fails if they are
skipped there; without a GPU, or without the library, they are skipped.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from kernel_cases import REAL_GPU

import nd2gpu

pytestmark = pytest.mark.skipif(not REAL_GPU, reason="needs a GPU and CuPy")


def test_torch_takes_the_block_without_a_copy(make_nd2):
    torch = pytest.importorskip("torch")
    cupy = pytest.importorskip("cupy")
    path, labels = make_nd2(loops=(("T", 3),), layers=("a", "b"), frame_shape=(9, 11))
    expected = np.stack([labels["a"], labels["b"]])
    with nd2gpu.ND2File(path, device="cuda") as f:
        layers = f.binary_data
        pointer = layers.__cuda_array_interface__["data"][0]
        tensor = torch.from_dlpack(layers)
        assert tensor.device.type == "cuda"
        assert tensor.dtype == torch.uint16
        assert tuple(tensor.shape) == expected.shape
        assert tensor.data_ptr() == pointer  # zero copy
        # Back through DLPack to check the values torch sees.
        np.testing.assert_array_equal(cupy.from_dlpack(tensor).get(), expected)
        layer = torch.from_dlpack(layers[1])
        assert tuple(layer.shape) == labels["b"].shape
        np.testing.assert_array_equal(cupy.from_dlpack(layer).get(), labels["b"])


@pytest.mark.slow
# dask-cuda's start-up may warn about the machine (CPU affinity, memory limits in
# a container): not what this test checks.
@pytest.mark.filterwarnings("default")
def test_dask_cuda_local_cuda_cluster(make_nd2):
    dask_cuda = pytest.importorskip("dask_cuda")
    distributed = pytest.importorskip("distributed")
    cupy = pytest.importorskip("cupy")
    path, labels = make_nd2(loops=(("T", 4),), layers=("a", "b"), frame_shape=(13, 7))
    expected = np.stack([labels["a"], labels["b"]])
    with (
        dask_cuda.LocalCUDACluster(
            n_workers=1,
            threads_per_worker=2,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with nd2gpu.ND2File(path) as f:
            x = f.binary_data.to_dask(device="cuda", frames_per_chunk=3)
        assert isinstance(x._meta, cupy.ndarray)
        got = client.compute(x, sync=True)
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_array_equal(got.get(), expected)
        assert len(client.scheduler_info()["workers"]) == 1
