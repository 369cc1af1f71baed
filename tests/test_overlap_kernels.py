"""Overlapping runs found exactly and rewritten so that the later run wins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from kernel_cases import MANY, Frames, frames_of, run_frames

from nd2gpu.kernels._overlap_kernels import (
    find_overlap,
    group_by_row,
    overlaps_by_row,
    resolve_later_wins,
    row_table,
)


def check(frames: Frames, i: int, counts=None) -> bool:
    lo, hi = (int(x) for x in frames.spans[i])
    order = np.empty(max(1, hi - lo), np.int32)
    counts = row_table(frames.nrows) if counts is None else counts
    return find_overlap(
        frames.rows, frames.cols, frames.lengths, lo, hi, frames.nrows, counts, order
    )


def check_by_row(frames: Frames, i: int) -> bool:
    """``overlaps_by_row`` on frame ``i``."""
    lo, hi = (int(x) for x in frames.spans[i])
    keys = np.empty(max(1, hi - lo), np.int64)
    return bool(
        overlaps_by_row(
            frames.rows,
            frames.cols,
            frames.lengths,
            lo,
            hi,
            frames.nrows,
            row_table(frames.nrows),
            keys,
        )
    )


def resolved(frames: Frames, i: int, counts=None) -> Frames:
    """Frame ``i`` rewritten by ``resolve_later_wins`` (appended to a copy)."""
    lo, hi = (int(x) for x in frames.spans[i])
    n = frames.n_runs
    room = n + 2 * (hi - lo)
    arrays = [
        np.zeros(room, a.dtype)
        for a in (frames.rows, frames.cols, frames.lengths, frames.values)
    ]
    for new, old in zip(
        arrays, (frames.rows, frames.cols, frames.lengths, frames.values), strict=True
    ):
        new[:n] = old
    order = np.empty(max(1, hi - lo), np.int32)
    counts = row_table(frames.nrows) if counts is None else counts
    group_by_row(arrays[0], lo, hi, frames.nrows, counts, order)
    end = resolve_later_wins(*arrays, lo, hi, order, n)
    out = Frames(frames.nrows, frames.ncols, *arrays, np.array([[n, end]], np.int64))
    return out


@MANY
@given(run_frames(overlap=True, max_pixels=600, max_cols=200))
def test_find_overlap_is_exact(frames):
    for i in range(frames.n_frames):
        assert check(frames, i) == frames.overlaps(i)
        # Tall frames group runs by a sort instead of a row table.
        assert check(frames, i, np.empty(0, np.int32)) == frames.overlaps(i)


@MANY
@given(run_frames(overlap=True, max_pixels=1200, max_cols=300))
def test_the_row_check_is_exact(frames):
    for i in range(frames.n_frames):
        assert check_by_row(frames, i) == frames.overlaps(i)


@MANY
@given(run_frames(overlap=False, max_pixels=1200, max_cols=300))
def test_the_row_check_passes_disjoint_runs(frames):
    for i in range(frames.n_frames):
        assert not check_by_row(frames, i)


def test_the_row_check_on_touching_and_long_rows():
    touching = frames_of(
        2, 10, [[(0, 0, 3, 1), (0, 3, 7, 2), (1, 5, 5, 3), (1, 0, 5, 4)]]
    )
    assert not check_by_row(touching, 0)
    many = frames_of(1, 400, [[(0, 10 * k, 10, k + 1) for k in range(40)][::-1]])
    assert not check_by_row(many, 0)  # more runs than the insertion sort takes
    many.cols[0] = 385  # the first (rightmost) run now overlaps its neighbour
    assert check_by_row(many, 0)
    nested = frames_of(1, 50, [[(0, 0, 40, 1), (0, 10, 5, 2), (0, 30, 5, 3)]])
    assert check_by_row(nested, 0)


@MANY
@given(run_frames(overlap=False))
def test_disjoint_runs_do_not_overlap(frames):
    for i in range(frames.n_frames):
        assert not check(frames, i)


def test_touching_runs_do_not_overlap_and_one_pixel_does():
    touching = frames_of(
        2, 10, [[(0, 0, 3, 1), (0, 3, 7, 2), (1, 5, 5, 3), (1, 0, 5, 4)]]
    )
    assert not check(touching, 0)
    shared = frames_of(2, 10, [[(0, 0, 3, 1), (1, 0, 1, 3), (0, 2, 8, 2)]])
    assert check(shared, 0)
    many = frames_of(1, 400, [[(0, 10 * k, 10, k + 1) for k in range(40)]])
    assert not check(many, 0)  # a row of more runs than the insertion sort takes
    many.cols[-1] = 385  # now it overlaps its neighbour
    assert check(many, 0)


@MANY
@given(run_frames(overlap=True, max_frames=1, max_pixels=600, max_cols=200))
def test_resolve_later_wins_paints_the_same(frames):
    out = resolved(frames, 0)
    np.testing.assert_array_equal(out.paint(0), frames.paint(0))
    assert not out.overlaps(0)
    lo, hi = out.spans[0]
    assert (out.values[lo:hi] != 0).all()  # background runs are dropped
    assert (out.lengths[lo:hi] > 0).all()
    rows = out.rows[lo:hi]
    assert (np.diff(rows) >= 0).all()  # rows ascending
    tall = resolved(frames, 0, np.empty(0, np.int32))
    np.testing.assert_array_equal(tall.paint(0), frames.paint(0))


def test_resolve_splits_a_run_around_a_later_one():
    frames = frames_of(1, 10, [[(0, 0, 10, 1), (0, 3, 2, 2), (0, 4, 1, 0)]])
    out = resolved(frames, 0)
    lo, hi = out.spans[0]
    got = list(
        zip(
            out.cols[lo:hi].tolist(),
            out.lengths[lo:hi].tolist(),
            out.values[lo:hi].tolist(),
            strict=True,
        )
    )
    assert got == [(0, 3, 1), (3, 1, 2), (5, 5, 1)]


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_frames_never_overlap(n):
    frames = frames_of(1, 4, [[(0, 0, 4, 1)] * n])
    assert not check(frames, 0)
