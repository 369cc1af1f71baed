"""CPU back end: decode frames into a NumPy block, frames in parallel threads.

Each decode thread inflates its frames and paints them in one compiled call per
group of frames (``kernels/_parse_kernels.decode_group``): the parser hands each
run straight to the output, in stream order, so where runs overlap the later one
wins, exactly as nd2 paints them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._decode.frame import parse_header, stream_error, warn_version
from .._decode.front import Streams, inflate_group, run_groups
from .._decode.inflate import inflate_cap
from .._decode.payloads import CallPayloads
from .._decode.plan import DecodePlan
from .._decode.schedule import raise_failure, run_parallel
from .._limits import check_allocation
from ..kernels import _parse_kernels as pk
from .layout import check_layout


def decode_frames(plan: DecodePlan, out: np.ndarray, *, zero: bool = False) -> None:
    """Decode ``plan`` into the block ``out`` of shape ``(slots, Y, X)``.

    ``out`` is zeroed, or with ``zero`` (a caller's reused block) each slot is
    zeroed by the thread that decodes into it, just before it paints the runs
    (the frame is then still in the cache when it is painted). Frames without a
    mask are zeros. Every frame must have the block's frame shape. The failure
    of the earliest job is raised as a ``DecodeError`` naming the file, layer
    and frame, once no thread reads the file any more.
    """
    nrows, ncols = int(out.shape[1]), int(out.shape[2])
    slots = plan.slots
    per_slot = zero and np.unique(slots).shape[0] == slots.shape[0]
    if zero and not per_slot:  # several jobs paint one slot: clear it all first
        out.fill(0)
    elif per_slot and slots.shape[0] < out.shape[0]:
        untouched = np.ones(out.shape[0], bool)
        untouched[slots] = False
        out[untouched] = 0
    flat = out.reshape(-1)
    bases = slots * (nrows * ncols)
    results = np.zeros((plan.n_jobs, pk.RESULT_FIELDS), np.int64)
    shape = (nrows, ncols)
    cap = inflate_cap(nrows, ncols)

    def consume(lo: int, streams: Streams, present: np.ndarray, n: int) -> int:
        return int(
            pk.decode_group(
                streams,
                present,
                0,
                n,
                nrows,
                ncols,
                flat,
                bases[lo : lo + n],
                per_slot,
                results[lo : lo + n],
            )
        )

    with plan.source.reading() as index:
        payloads = CallPayloads(plan, index)
        failures = run_parallel(
            lambda groups: run_groups(payloads, groups, cap, shape, results, consume),
            plan.n_jobs,
            nrows * ncols,
        )
    raise_failure(plan, failures)
    plan.warn_versions(results)


def paint_payloads(payloads: Sequence[bytes], out: np.ndarray) -> None:
    """Decode payloads (zlib streams) into the zeroed frames of ``out``, in this
    thread (``decode_binary_mask``).

    Raises
    ------
    DecodeError
        For the first corrupt payload (its offset, without file context).
    """
    nrows, ncols = int(out.shape[1]), int(out.shape[2])
    cap = inflate_cap(nrows, ncols)
    streams, present, n, error = inflate_group(list(payloads), cap, (nrows, ncols))
    results = np.zeros((pk.GROUP_FRAMES, pk.RESULT_FIELDS), np.int64)
    bases = np.arange(pk.GROUP_FRAMES, dtype=np.int64) * (nrows * ncols)
    done = pk.decode_group(
        streams, present, 0, n, nrows, ncols, out.reshape(-1), bases, False, results
    )
    if done < n:
        raise stream_error(results[done], (nrows, ncols))
    if error is not None:
        raise error


def decode_binary_mask(payload: bytes) -> np.ndarray:
    """Decode one frame's binary-layer payload into a label image.

    The result is identical to ``nd2._binary.decode_binary_mask(payload)``: a
    ``(nrows, ncols)`` uint16 array, 0 for background and each object's id on its
    pixels (where runs overlap, the later one wins; runs are clipped at the right
    edge).

    Parameters
    ----------
    payload : bytes
        The data of a ``CustomDataSeq|<FileTag>|<seq>!`` chunk after its 4-byte
        prefix: one zlib stream.

    Returns
    -------
    numpy.ndarray
        The label image.

    Raises
    ------
    DecodeError
        If the payload is corrupt (bad zlib, truncated records, a row outside the
        frame, an id above 65535, a zip bomb, a frame of more than
        ``MAX_FRAME_PIXELS`` pixels). The message gives the byte offset in the
        inflated stream.
    MemoryError
        If the frame the header claims is larger than this machine's memory.

    Examples
    --------
    >>> import numpy as np, nd2gpu
    >>> from nd2gpu._format.mask_encode import encode_mask_chunk
    >>> labels = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.uint16)
    >>> nd2gpu.decode_binary_mask(encode_mask_chunk(labels)[4:])
    array([[0, 1, 1],
           [2, 2, 0]], dtype=uint16)
    """
    data = bytes(payload)
    header = parse_header(data)
    warn_version(header)
    check_allocation(2 * header.n_pixels, None, f"a {header.shape} uint16 frame")
    out = np.zeros(header.shape, dtype=np.uint16)
    paint_payloads([data], out[None])
    return out


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A new zeroed uint16 NumPy block."""
    return np.zeros(shape, dtype=np.uint16)


def check_out(out: object, shape: tuple[int, ...]) -> None:
    """Raise unless ``out`` is a writeable NumPy block that can take ``shape``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out must be a NumPy array for device 'cpu', not {type(out).__name__}"
        )
    check_layout(out.shape, out.dtype, out.flags.c_contiguous, shape)
    if not out.flags.writeable:
        raise ValueError("out must be writeable")


def clear(out: np.ndarray) -> None:
    """Zero ``out`` in place."""
    out.fill(0)


def meta(ndim: int) -> np.ndarray:
    """An empty uint16 NumPy array of ``ndim`` dimensions."""
    return np.empty((0,) * ndim, dtype=np.uint16)


def synchronize() -> None:
    """Nothing to wait for: the CPU back end returns when the work is done."""
