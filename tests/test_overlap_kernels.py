"""Overlap detection and removal on the CPU: exact, and painting the same image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from kernel_cases import MANY, brute_force_overlap, coverage, paint, run_batches

from nd2gpu.kernels._overlap_kernels import (
    frame_has_overlap,
    make_non_overlapping,
    resolve_later_wins,
)
from nd2gpu.kernels._run_table import RunTable


@MANY
@given(run_batches(overlap=True, max_pixels=600, max_cols=200))
def test_frame_has_overlap_is_exact(batch):
    table, bounds, fp = batch
    bits = np.full(fp // 64 + 1, np.uint64(0xFFFF_FFFF_FFFF_FFFF))  # stale scratch
    for lo, hi, base in bounds.tolist():
        got = frame_has_overlap(table.starts, table.lengths, lo, hi, base, fp, bits)
        assert got == brute_force_overlap(table, lo, hi, base, fp)


@MANY
@given(run_batches(overlap=False))
def test_frame_has_overlap_false_for_disjoint_runs(batch):
    table, bounds, fp = batch
    bits = np.zeros(fp // 64 + 1, np.uint64)
    for lo, hi, base in bounds.tolist():
        assert not frame_has_overlap(
            table.starts, table.lengths, lo, hi, base, fp, bits
        )


EDGE_RUNS = [
    (a, n)
    for a in (0, 1, 63, 64, 65, 127, 128)
    for n in (1, 2, 63, 64, 65, 129, 200)
    if a + n <= 330
]


def test_run_pairs_at_word_edges():
    """Every pair of runs starting and ending near 64-pixel word boundaries."""
    fp, base = 330, 1000
    bits = np.zeros(6, np.uint64)
    out = np.empty(3, np.int64), np.empty(3, np.int32), np.empty(3, np.uint16)
    for (a1, n1), (a2, n2) in itertools.product(EDGE_RUNS, repeat=2):
        table = RunTable.from_runs([base + a1, base + a2], [n1, n2], [1, 2])
        expected = a1 < a2 + n2 and a2 < a1 + n1
        assert (
            frame_has_overlap(table.starts, table.lengths, 0, 2, base, fp, bits)
            == expected
        ), (a1, n1, a2, n2)
        k = resolve_later_wins(
            table.starts, table.lengths, table.values, 0, 2, base, fp, bits, *out
        )
        got = paint(out[0][:k] - base, out[1][:k], out[2][:k], fp)
        want = paint(table.starts - base, table.lengths, table.values, fp)
        assert np.array_equal(got, want), (a1, n1, a2, n2)


def test_frame_has_overlap_word_edges():
    bits = np.zeros(4, np.uint64)
    starts = np.array([64, 0, 127], np.int64)
    lengths = np.array([64, 64, 1], np.int32)
    assert not frame_has_overlap(starts, lengths, 0, 2, 0, 200, bits)
    assert frame_has_overlap(starts, lengths, 0, 3, 0, 200, bits)
    with pytest.raises(ValueError, match="outside"):
        frame_has_overlap(starts, lengths, 0, 2, 0, 100, bits)


@MANY
@given(run_batches(overlap=True, max_frames=1, max_pixels=600, max_cols=200))
def test_resolve_later_wins_paints_the_same(batch):
    table, bounds, fp = batch
    lo, hi, base = bounds[0].tolist()
    cap = max(1, 2 * (hi - lo))
    out = np.empty(cap, np.int64), np.empty(cap, np.int32), np.empty(cap, np.uint16)
    bits = np.zeros(fp // 64 + 1, np.uint64)
    k = resolve_later_wins(
        table.starts, table.lengths, table.values, lo, hi, base, fp, bits, *out
    )
    assert k <= max(0, 2 * (hi - lo) - 1)
    resolved = RunTable.from_runs(out[0][:k], out[1][:k], out[2][:k])
    assert coverage(resolved, fp).max(initial=0) <= 1
    np.testing.assert_array_equal(
        paint(resolved.starts, resolved.lengths, resolved.values, fp),
        paint(table.starts, table.lengths, table.values, fp),
    )


def test_resolve_later_wins_splits_and_checks_capacity():
    # A long run cut in three by later runs: 2 * 3 - 1 = 5 pieces.
    starts = np.array([0, 10, 30], np.int64)
    lengths = np.array([100, 5, 64], np.int32)
    values = np.array([1, 2, 3], np.uint16)
    bits = np.zeros(2, np.uint64)
    out = np.empty(5, np.int64), np.empty(5, np.int32), np.empty(5, np.uint16)
    k = resolve_later_wins(starts, lengths, values, 0, 3, 0, 100, bits, *out)
    pieces = sorted(zip(*(a[:k].tolist() for a in out), strict=True))
    assert pieces == [(0, 10, 1), (10, 5, 2), (15, 15, 1), (30, 64, 3), (94, 6, 1)]
    short = np.empty(4, np.int64), np.empty(4, np.int32), np.empty(4, np.uint16)
    with pytest.raises(ValueError, match="too short"):
        resolve_later_wins(starts, lengths, values, 0, 3, 0, 100, bits, *short)


@MANY
@given(run_batches(overlap=False))
def test_make_non_overlapping_keeps_clean_tables(batch):
    table, bounds, fp = batch
    assert make_non_overlapping(table, bounds, fp) is table


@MANY
@given(run_batches(overlap=True, max_pixels=400, max_cols=150))
def test_make_non_overlapping_rewrites_only_overlapping_frames(batch):
    table, bounds, fp = batch
    size = fp * len(bounds)
    new = make_non_overlapping(table, bounds, fp)
    assert coverage(new, size).max(initial=0) <= 1
    np.testing.assert_array_equal(
        paint(new.starts, new.lengths, new.values, size),
        paint(table.starts, table.lengths, table.values, size),
    )
    np.testing.assert_array_equal(new.prefix[1:], np.cumsum(new.lengths))
    # Frames without overlaps keep their runs, in order.
    clean = [
        table.starts[lo:hi].tolist()
        for lo, hi, base in bounds.tolist()
        if not brute_force_overlap(table, lo, hi, base, fp)
    ]
    kept = new.starts.tolist()
    for runs in clean:
        if runs:
            i = kept.index(runs[0])
            assert kept[i : i + len(runs)] == runs


def test_make_non_overlapping_keeps_runs_outside_frames():
    table = RunTable.from_runs([0, 2, 3, 5], [3, 2, 1, 1], [1, 2, 3, 4])
    new = make_non_overlapping(table, [(1, 3, 0)], 6)  # runs 1 and 2 overlap
    assert new is not table
    assert new.starts[0] == 0 and new.starts[-1] == 5
    np.testing.assert_array_equal(
        paint(new.starts, new.lengths, new.values, 6),
        paint(table.starts, table.lengths, table.values, 6),
    )
