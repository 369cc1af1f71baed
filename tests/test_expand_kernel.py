"""Staged batches: written by the decode threads' kernel, painted by the GPU kernel
(numba's simulator without a GPU) exactly as painting the runs in order does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import (
    FEW,
    MANY,
    SMALL_LAUNCH,
    Frames,
    frames_of,
    needs_cuda,
    run_frames,
)
from numba import cuda

from nd2gpu.kernels._batch_layout import (
    ENTRY_FIELDS,
    F_PIXELS,
    F_RUNS,
    F_TILE_LO,
    FRAME_FIELDS,
)
from nd2gpu.kernels._overlap_kernels import find_overlap, resolve_later_wins, row_table
from nd2gpu.kernels._stage_kernels import paint_batch, stage_entries


def without_overlaps(frames: Frames) -> Frames:
    """Every frame resolved (the later run winning), one after another."""
    rows, cols, lengths, values, spans = [], [], [], [], []
    at = 0
    for i in range(frames.n_frames):
        lo, hi = (int(x) for x in frames.spans[i])
        n = hi - lo
        room = frames.n_runs + 2 * n
        a = [
            np.zeros(room, x.dtype)
            for x in (frames.rows, frames.cols, frames.lengths, frames.values)
        ]
        for new, old in zip(
            a, (frames.rows, frames.cols, frames.lengths, frames.values), strict=True
        ):
            new[: frames.n_runs] = old
        order = np.empty(max(1, n), np.int32)
        if find_overlap(
            a[0], a[1], a[2], lo, hi, frames.nrows, row_table(frames.nrows), order
        ):
            end = resolve_later_wins(*a, lo, hi, order, frames.n_runs)
            lo, hi = frames.n_runs, end
        for out, src in zip((rows, cols, lengths, values), a, strict=True):
            out.append(src[lo:hi])
        spans.append((at, at + hi - lo))
        at += hi - lo
    return Frames(
        frames.nrows,
        frames.ncols,
        *(np.concatenate(x) for x in (rows, cols, lengths, values)),
        np.array(spans, np.int64).reshape(-1, 2),
    )


def stage(
    frames: Frames, slots: list[int], tile: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The batch of ``frames`` (frame ``i`` into output slot ``slots[i]``), tiles
    numbered for ``tile`` pixels a tile."""
    n = frames.n_frames
    table = np.zeros((n, FRAME_FIELDS), np.int64)
    entries = np.zeros((max(1, frames.n_runs), ENTRY_FIELDS), np.uint32)
    fp = frames.nrows * frames.ncols
    written = stage_entries(
        frames.rows,
        frames.cols,
        frames.lengths,
        frames.values,
        frames.spans,
        n,
        np.zeros(n, np.int64),
        frames.ncols,
        np.asarray(slots, np.int64) * fp,
        table,
        0,
        entries,
        0,
        0,
    )
    assert written == int(table[:, F_RUNS].sum()) <= frames.n_runs
    tiles = (table[:, F_PIXELS] + tile - 1) // tile
    table[:, F_TILE_LO] = np.cumsum(tiles) - tiles
    return table, entries, int(tiles.sum())


def reference(frames: Frames, slots: list[int], n_slots: int) -> np.ndarray:
    out = np.zeros((n_slots, frames.nrows, frames.ncols), np.uint16)
    for i, slot in enumerate(slots):
        out[slot] = frames.paint(i)
    return out


@MANY
@given(run_frames(overlap=True), st.randoms())
def test_host_painting_of_a_batch_is_sequential_painting(frames, rnd):
    clean = without_overlaps(frames)
    slots = rnd.sample(range(frames.n_frames + 2), frames.n_frames)
    table, entries, _ = stage(clean, slots, tile=7)
    out = np.zeros((frames.n_frames + 2, frames.nrows, frames.ncols), np.uint16)
    paint_batch(out.reshape(-1), table, frames.n_frames, entries)
    np.testing.assert_array_equal(out, reference(frames, slots, frames.n_frames + 2))


def expand(table, entries, n_tiles, size, **launch):
    from nd2gpu.kernels._expand_cuda import expand_runs

    out = cuda.to_device(np.zeros(size, np.uint16))
    expand_runs(
        out,
        cuda.to_device(table),
        cuda.to_device(entries),
        table.shape[0],
        n_tiles,
        **launch,
    )
    return out.copy_to_host()


@needs_cuda
def test_expand_single_run():
    frames = frames_of(1, 8, [[(0, 2, 3, 7)]])
    launch = SMALL_LAUNCH or {"block": 32, "items": 4}
    table, entries, n_tiles = stage(frames, [0], launch["block"] * launch["items"])
    got = expand(table, entries, n_tiles, 8, **launch)
    np.testing.assert_array_equal(got, [0, 0, 7, 7, 7, 0, 0, 0])


@needs_cuda
@pytest.mark.parametrize(
    "lengths,launch",
    [
        ([31, 1, 33], {"block": 16, "items": 2}),  # runs across tile edges
        ([64] * 3, {"block": 16, "items": 2, "window": 2}),  # past a full window
        ([1] * 40, {"block": 8, "items": 1, "window": 4}),
        ([5, 0, 0, 5], {"block": 4, "items": 1}),  # frames without pixels
    ],
)
def test_expand_tile_edges_windows_and_empty_frames(lengths, launch):
    runs = [[(0, 0, n, k + 1)] if n else [] for k, n in enumerate(lengths)]
    frames = frames_of(1, max(lengths), runs)
    slots = list(reversed(range(len(lengths))))
    table, entries, n_tiles = stage(frames, slots, launch["block"] * launch["items"])
    got = expand(table, entries, n_tiles, len(lengths) * max(lengths), **launch)
    np.testing.assert_array_equal(
        got.reshape(len(lengths), 1, -1), reference(frames, slots, len(lengths))
    )


@pytest.mark.slow
@needs_cuda
@FEW
@given(
    run_frames(overlap=True),
    st.sampled_from([None, 1, 3]),
    st.sampled_from([None, 1, 2]),
)
def test_expand_matches_sequential_painting(frames, window, grid):
    clean = without_overlaps(frames)
    launch = dict(SMALL_LAUNCH or {"block": 32, "items": 4})
    table, entries, n_tiles = stage(
        clean, list(range(frames.n_frames)), launch["block"] * launch["items"]
    )
    got = expand(
        table,
        entries,
        n_tiles,
        frames.n_frames * frames.nrows * frames.ncols,
        window=window,
        grid=grid,
        **launch,
    )
    np.testing.assert_array_equal(
        got.reshape(frames.n_frames, frames.nrows, frames.ncols),
        reference(frames, list(range(frames.n_frames)), frames.n_frames),
    )
