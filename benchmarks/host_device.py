"""A host stand-in for the device side of nd2gpu's CUDA pipeline.

``BatchPipeline`` (``nd2gpu/_backends/cuda/batches.py``) talks to the GPU only
through a ``DeviceSide``; ``HostDevice`` is one that needs no GPU: "pinned"
buffers are NumPy arrays, the host-to-device copy is a copy into a NumPy
buffer, and the kernel is its host twin (``paint_batch``) painting into a NumPy
block. The benchmark of the host half (bench_gpu_host.py) and the tests use it
to run the real pipeline code, decode threads and all, on any machine.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from nd2gpu._backends.cuda.batches import StagedBatch
from nd2gpu.kernels._batch_layout import (
    ENTRY_BYTES,
    ENTRY_FIELDS,
    FRAME_BYTES,
    FRAME_FIELDS,
)
from nd2gpu.kernels._stage_kernels import paint_batch


class HostDevice:
    """The device calls of the CUDA pipeline, done on the host.

    Parameters
    ----------
    out : numpy.ndarray
        The ``(slots, Y, X)`` uint16 block to paint into (zeroed).
    paint : bool
        Paint each batch (else only copy it: what the host half costs, the GPU's
        work left out).
    tile_pixels : int
        Pixels a tile (as the GPU kernel's default launch).
    """

    def __init__(
        self, out: np.ndarray, *, paint: bool = True, tile_pixels: int = 2048
    ) -> None:
        self.out = out.reshape(-1)
        self.paint = paint
        self.tile_pixels = tile_pixels
        #: Device calls the real device side would make, by kind.
        self.calls: Counter[str] = Counter()
        self.bytes_copied = 0
        self.ring: list[StagedBatch | None] = [None] * 3
        self._device: list[np.ndarray | None] = [None] * 3

    def pinned(self, nbytes: int) -> np.ndarray:
        self.calls["pinned_allocations"] += 1
        return np.empty(nbytes, np.uint8)

    def wait_copied(self, slot: int) -> None:
        self.calls["syncs"] += 1

    def submit(self, slot: int, batch: StagedBatch, n_tiles: int) -> None:
        nbytes = batch.used_bytes
        device = self._device[slot]
        if device is None or device.shape[0] < batch.host.shape[0]:
            device = self._device[slot] = np.empty(batch.host.shape[0], np.uint8)
        device[:nbytes] = batch.host[:nbytes]
        self.bytes_copied += nbytes
        self.calls["copies"] += 1
        self.calls["events"] += 1
        if n_tiles and self.paint:
            table = batch.max_frames * FRAME_BYTES
            frames = device[:table].view(np.int64).reshape(-1, FRAME_FIELDS)
            entries = device[table : table + batch.capacity * ENTRY_BYTES]
            paint_batch(
                self.out,
                frames,
                batch.n_frames,
                entries.view(np.uint32).reshape(-1, ENTRY_FIELDS),
            )
        if n_tiles:
            self.calls["launches"] += 1

    def finish(self) -> None:
        self.calls["syncs"] += 1
