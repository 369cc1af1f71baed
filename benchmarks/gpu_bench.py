"""GPU half of bench.py: file -> CuPy, nd2 + CuPy, and the expansion kernel's bandwidth.

Needs a CUDA GPU with CuPy and numba-cuda (never the simulator).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import cupy
import nd2
import numpy as np
from nd2gpu.kernels._expand_cuda import expand_runs
from numba import cuda

import nd2gpu
from nd2gpu._backends.cuda.pipeline import assemble, parse_frame
from nd2gpu._decode.mask_source import MaskSource
from nd2gpu._decode.plan import FrameJob
from nd2gpu._format.layer_metadata import LayerMeta
from nd2gpu.cli.timing import median_seconds


def _synced(fn):
    def run():
        out = fn()
        cupy.cuda.get_current_stream().synchronize()
        cupy.cuda.Device().synchronize()
        return out

    return run


def file_to_cupy(path: Path) -> cupy.ndarray:
    with nd2gpu.ND2File(path, device="cuda") as f:
        return cupy.asarray(f.binary_data.asarray())


def nd2_to_cupy(path: Path) -> cupy.ndarray:
    with nd2.ND2File(path) as f:
        return cupy.asarray(np.asarray(f.binary_data))


def event_ms(fn, repeats: int) -> float:
    """Median device time of ``fn`` (CUDA events), after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def whole_table(path: Path):
    """The run table of every frame of the file's first layer, built on the CPU."""
    with nd2.ND2File(path) as f:
        layer = f.binary_data[0]
        meta = LayerMeta(layer.name, layer.file_tag)
        n = len(layer)
        shape = layer.frame_shape
    source = MaskSource(path)
    pixels = shape[0] * shape[1]
    with source.reading() as index:
        parsed = [
            parse_frame(source, index, FrameJob(meta, seq, seq), shape, seq * pixels)
            for seq in range(n)
        ]
    source.close()
    table, _ = assemble(parsed, pixels)
    return table, (n, *shape)


def bench_cuda(path: Path, n_frames: int, repeats: int) -> dict:
    expected = nd2_to_cupy(path)
    got = file_to_cupy(path)
    if not bool((expected == got).all()):
        raise AssertionError(f"{path.name}: cuda result differs from nd2")
    nd2_s = median_seconds(_synced(lambda: nd2_to_cupy(path)), max(1, repeats // 3))
    cuda_s = median_seconds(_synced(lambda: file_to_cupy(path)), repeats)

    table, shape = whole_table(path)
    d_out = cupy.zeros(shape, cupy.uint16)
    d_starts = cupy.asarray(table.starts)
    d_values = cupy.asarray(table.values)
    d_prefix = cupy.asarray(table.prefix)
    views = [
        cuda.as_cuda_array(a) for a in (d_out.ravel(), d_starts, d_values, d_prefix)
    ]

    def expand() -> None:
        expand_runs(*views, table.n_runs, table.n_pixels)

    kernel_ms = event_ms(expand, repeats)
    if not bool((d_out == expected[0]).all()):
        raise AssertionError(f"{path.name}: kernel output differs from nd2")
    src = cupy.empty(d_out.nbytes, cupy.uint8)
    dst = cupy.empty_like(src)
    copy_ms = event_ms(lambda: dst.__setitem__(Ellipsis, src), repeats)

    written = 2 * table.n_pixels + 18 * table.n_runs  # pixels + starts/values/prefix
    kernel_gbps = written / kernel_ms / 1e6
    copy_gbps = 2 * src.nbytes / copy_ms / 1e6
    ms = 1e3 / n_frames
    return {
        "nd2_cupy_ms": nd2_s * ms,
        "cuda_ms": cuda_s * ms,
        "cuda_speedup_vs_nd2": nd2_s / cuda_s,
        "kernel_ms_per_frame": kernel_ms / n_frames,
        "kernel_gbps": kernel_gbps,
        "copy_gbps": copy_gbps,
        "kernel_over_copy": kernel_gbps / copy_gbps,
        "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
    }
