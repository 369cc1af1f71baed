"""The calls the front-half benchmarks measure, and their floors, on a file.

Each case is ``make_case(name, path, batch) -> (run, frames)``: ``run()`` does
the call once on the open file (every frame, or random batches), ``frames`` is
how many frames it decodes. ``make_floor`` gives the same call's floor:
inflating the same payloads in the same number of threads, plus writing the
output where the call writes dense frames.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import payloads

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.plan import DecodePlan
from nd2gpu._decode.pool import worker_count

#: The cases: what each runs.
CASES = {
    "asarray": "np.asarray(f.binary_data): every frame into one new block",
    "loader": "layer.decode(16 random frames, out=buf), batch after batch",
    "objects": "layer.regionprops_table(): every frame's objects",
    "gpu-host": "the CUDA pipeline's host half (device calls on the host, no paint)",
    "inflate": "the floor's own work: the payloads inflated in the decode threads",
}
#: Batches a loader pass decodes.
LOADER_BATCHES = 8
_open_files: dict[Path, nd2gpu.ND2File] = {}


def _batches(n: int, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        np.sort(rng.choice(n, batch, replace=batch > n)) for _ in range(LOADER_BATCHES)
    ]


def make_case(
    name: str, path: Path, batch: int = 16
) -> tuple[Callable[[], object], int]:
    """``run`` and its frames for case ``name`` on the file at ``path`` (kept open
    for as long as ``run`` lives: a closed file's layers reopen it per call)."""
    f = _open_files.setdefault(path, nd2gpu.ND2File(path))
    layer = f.binary_data[0]
    n = len(layer)
    shape = layer.frame_shape
    if name == "asarray":
        return (lambda: np.asarray(f.binary_data)), n * len(f.binary_data)
    if name == "loader":
        batches = _batches(n, batch)
        buf = np.empty((batch, *shape), np.uint16)

        def loader() -> None:
            for frames in batches:
                layer.decode(frames, out=buf)

        return loader, batch * len(batches)
    if name == "objects":
        return layer.regionprops_table, n
    if name == "gpu-host":
        from host_device import HostDevice

        from nd2gpu._backends.cuda.batches import BatchPipeline

        out = np.zeros((n, *shape), np.uint16)
        device = HostDevice(out, paint=False)
        plan = DecodePlan.of([layer.ref], 0, range(n))
        bases = plan.slots * (shape[0] * shape[1])

        def host_half() -> None:
            BatchPipeline(device, shape, device.ring).run(plan, bases)

        return host_half, n
    if name == "inflate":
        return make_floor("objects", path, batch)
    raise ValueError(f"unknown case {name!r}; cases: {', '.join(CASES)}")


def make_floor(
    name: str, path: Path, batch: int = 16
) -> tuple[Callable[[], object], int]:
    """The floor of case ``name``: the same payloads inflated in the same number
    of threads (from memory), plus the output written where the case writes
    dense frames."""
    data = payloads(path)
    with nd2gpu.ND2File(path) as f:
        shape = f.binary_data[0].frame_shape
    pool = ThreadPoolExecutor(worker_count())
    decompress = _inflate.INFLATER.decompress
    if name == "asarray":

        def dense() -> None:
            out = np.zeros((len(data), *shape), np.uint16)

            def one(i: int) -> None:
                decompress(data[i])
                out[i].fill(0)

            list(pool.map(one, range(len(data))))

        return dense, len(data)
    if name == "loader":
        batches = _batches(len(data), batch)
        buf = np.empty((batch, *shape), np.uint16)

        def loader() -> None:
            for frames in batches:
                buf.fill(0)
                list(pool.map(decompress, [data[i] for i in frames]))

        return loader, batch * len(batches)
    if name in ("objects", "gpu-host"):
        return (lambda: list(pool.map(decompress, data))), len(data)
    raise ValueError(f"unknown case {name!r}")
