"""The run table: a batch of decoded mask runs, ready to expand on either device.

A run table describes what to paint into one C-contiguous ``uint16`` output block
(all frames of a batch, often the whole stacked result):

- ``starts[i]``: flat offset, in elements, of the first pixel of run ``i``,
- ``lengths[i]``: run length in pixels (> 0, already clipped to its row),
- ``values[i]``: the label written,
- ``prefix``: exclusive prefix sum of ``lengths`` (``prefix[n]`` = pixels in all).

Runs are in stream order. Painting them in order (``out[s:s + l] = v``) defines the
result, so where runs of one frame overlap, the later run wins.

Frames are described by ``frame_bounds``: an ``int64`` array of shape
``(n_frames, 3)`` holding ``(run_lo, run_hi, frame_base)`` per frame, i.e. the
frame's runs are ``run_lo:run_hi`` and its pixels are the output offsets
``[frame_base, frame_base + frame_pixels)``; ``frame_pixels`` is passed separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["RunTable", "as_frame_bounds", "stage_runs"]


def _coerce(arr: object, dtype: np.dtype, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype == dtype:
        return np.ascontiguousarray(a)
    if a.size and a.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, got {a.dtype}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise ValueError(f"{name} does not fit in {np.dtype(dtype).name}")
    return a.astype(dtype)


@dataclass(frozen=True, eq=False)
class RunTable:
    """A flat table of runs for a batch of frames (see the module docstring).

    Arrays are converted on construction to ``int64`` / ``int32`` / ``uint16`` /
    ``int64`` (no copy when they already are); integer values that do not fit
    raise ``ValueError``.

    Attributes
    ----------
    starts : numpy.ndarray
        ``int64[n]`` absolute flat output offset of each run's first pixel.
    lengths : numpy.ndarray
        ``int32[n]`` run lengths in pixels.
    values : numpy.ndarray
        ``uint16[n]`` labels.
    prefix : numpy.ndarray
        ``int64[n + 1]`` exclusive prefix sum of ``lengths``.
    """

    starts: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    prefix: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in (
            ("starts", np.int64),
            ("lengths", np.int32),
            ("values", np.uint16),
            ("prefix", np.int64),
        ):
            object.__setattr__(
                self, name, _coerce(getattr(self, name), np.dtype(dtype), name)
            )
        n = self.starts.shape[0]
        if self.lengths.shape[0] != n or self.values.shape[0] != n:
            raise ValueError("starts, lengths and values must have the same length")
        if self.prefix.shape[0] != n + 1:
            raise ValueError(f"prefix must have n_runs + 1 = {n + 1} entries")

    @classmethod
    def from_runs(cls, starts: object, lengths: object, values: object) -> RunTable:
        """Build a table from runs, computing the prefix sum of the lengths.

        Parameters
        ----------
        starts, lengths, values : array_like
            Per-run flat offsets, lengths and labels, in painting order.

        Returns
        -------
        RunTable
        """
        lengths = _coerce(lengths, np.dtype(np.int32), "lengths")
        prefix = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, dtype=np.int64, out=prefix[1:])
        return cls(starts, lengths, values, prefix)

    @property
    def n_runs(self) -> int:
        """Number of runs."""
        return int(self.starts.shape[0])

    @property
    def n_pixels(self) -> int:
        """Total pixels painted, overlaps counted once per run (``prefix[-1]``)."""
        return int(self.prefix[-1])

    def check(self, out_size: int) -> None:
        """Check, in O(n_runs), that expanding the table stays inside the output.

        Parameters
        ----------
        out_size : int
            Number of elements of the flat output block.

        Raises
        ------
        ValueError
            If a length is not positive, ``prefix`` is not the prefix sum of
            ``lengths``, or a run lies outside ``[0, out_size)``.
        """
        if self.prefix[0] != 0:
            raise ValueError("prefix must start at 0")
        i, problem = _first_bad_run(
            self.starts, self.lengths, self.prefix, int(out_size)
        )
        if problem == 1:
            raise ValueError(f"run {i} has length {self.lengths[i]}, not positive")
        if problem == 2:
            raise ValueError(
                f"prefix is not the exclusive prefix sum of lengths (at run {i})"
            )
        if problem == 3:
            raise ValueError(
                f"run {i} (start {self.starts[i]}, length {self.lengths[i]}) lies "
                f"outside the output of {out_size} elements"
            )


@njit(nogil=True, cache=True)
def _first_bad_run(
    starts: np.ndarray, lengths: np.ndarray, prefix: np.ndarray, out_size: int
) -> tuple[int, int]:
    """First run that breaks the table's invariants and how (0: none)."""
    for i in range(starts.shape[0]):
        n = lengths[i]
        if n <= 0:
            return i, 1
        if prefix[i + 1] - prefix[i] != n:
            return i, 2
        if starts[i] < 0 or starts[i] + n > out_size:
            return i, 3
    return -1, 0


def as_frame_bounds(frame_bounds: object, n_runs: int) -> np.ndarray:
    """Validate per-frame run ranges and bases.

    Parameters
    ----------
    frame_bounds : array_like
        ``(n_frames, 3)`` integers ``(run_lo, run_hi, frame_base)``; run ranges in
        increasing order, not overlapping, inside ``[0, n_runs]``.
    n_runs : int
        Number of runs of the table the bounds refer to.

    Returns
    -------
    numpy.ndarray
        The bounds as a C-contiguous ``int64`` array of shape ``(n_frames, 3)``.
    """
    fb = np.ascontiguousarray(frame_bounds, dtype=np.int64)
    if fb.ndim != 2 or fb.shape[1] != 3:
        raise ValueError(f"frame_bounds must have shape (n_frames, 3), got {fb.shape}")
    lo, hi = fb[:, 0], fb[:, 1]
    if fb.shape[0] and (
        lo.min() < 0
        or hi.max() > n_runs
        or np.any(hi < lo)
        or np.any(lo[1:] < hi[:-1])
        or fb[:, 2].min() < 0
    ):
        raise ValueError(
            "frame_bounds run ranges must be ordered, disjoint and inside the table"
        )
    return fb


@njit(nogil=True, cache=True)
def stage_runs(
    starts: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray,
    out_starts: np.ndarray,
    out_values: np.ndarray,
    out_prefix: np.ndarray,
    run_offset: int,
    pixel_offset: int,
) -> int:
    """Copy one frame's runs into a batch table from ``run_offset`` on.

    ``out_prefix`` receives the exclusive prefix sum of the lengths, starting at
    ``pixel_offset`` (the pixels of the batch's earlier frames). Returns the
    prefix sum after the frame's last run.
    """
    pixel = pixel_offset
    for i in range(starts.shape[0]):
        out_starts[run_offset + i] = starts[i]
        out_values[run_offset + i] = values[i]
        out_prefix[run_offset + i] = pixel
        pixel += lengths[i]
    return pixel
