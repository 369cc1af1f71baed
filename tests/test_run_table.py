"""RunTable and frame bounds: conversion, and the checks that keep expansion inside."""

from __future__ import annotations

import numpy as np
import pytest

from nd2gpu.kernels._run_table import RunTable, as_frame_bounds


def test_run_table_converts_and_checks():
    t = RunTable.from_runs([3, 0], [2, 1], [7, 65535])
    assert (t.starts.dtype, t.lengths.dtype, t.values.dtype, t.prefix.dtype) == (
        np.int64,
        np.int32,
        np.uint16,
        np.int64,
    )
    assert t.n_runs == 2 and t.n_pixels == 3
    assert t.prefix.tolist() == [0, 2, 3]
    t.check(5)
    with pytest.raises(ValueError, match="outside"):
        t.check(4)
    with pytest.raises(ValueError, match="fit"):
        RunTable.from_runs([0], [1], [65536])
    with pytest.raises(ValueError, match="prefix"):
        RunTable([0], [1], [1], [0])
    with pytest.raises(ValueError, match="prefix sum"):
        RunTable([0], [2], [1], [0, 1]).check(10)
    with pytest.raises(ValueError, match="positive"):
        RunTable([0], [0], [1], [0, 0]).check(10)
    assert RunTable.from_runs([], [], []).n_pixels == 0


def test_frame_bounds_are_validated():
    assert as_frame_bounds([(0, 2, 0), (2, 3, 10)], 3).dtype == np.int64
    for bad in ([(0, 4, 0)], [(1, 0, 0)], [(0, 2, 0), (1, 3, 5)], [(0, 1)]):
        with pytest.raises(ValueError):
            as_frame_bounds(bad, 3)
