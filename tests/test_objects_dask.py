"""regionprops_dask: the same rows as regionprops_table, on any scheduler."""

from __future__ import annotations

import pickle

import numpy as np
import pandas
import pytest
from kernel_cases import needs_cuda
from test_objects import ALL

import nd2gpu
from nd2gpu._regionprops_dask import objects_partition


def frame_of(table: dict) -> pandas.DataFrame:
    return pandas.DataFrame({k: nd2gpu._device.to_numpy(v) for k, v in table.items()})


def assert_frames_equal(got: pandas.DataFrame, expected: pandas.DataFrame) -> None:
    got = got.reset_index(drop=True)
    assert list(got.columns) == list(expected.columns)
    for name in expected.columns:
        if name == "path":
            assert got[name].tolist() == expected[name].tolist()
        else:
            assert got[name].dtype == expected[name].dtype, name
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0)


def test_layer_layers_and_paths(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)))
    other, _ = make_nd2(loops=(("T", 3), ("Z", 2)), name="g.nd2")
    with nd2gpu.ND2File(path) as f:
        layer_table = frame_of(f.binary_data[1].regionprops_table())
        layers_table = frame_of(f.binary_data.regionprops_table())
        one = nd2gpu.regionprops_dask(f.binary_data[1], frames_per_chunk=4)
        every = nd2gpu.regionprops_dask(f.binary_data, frames_per_chunk=1)
    assert one.npartitions == 2  # two t (4 frames), then the last t
    assert every.npartitions == 12
    assert_frames_equal(one.compute(scheduler="sync"), layer_table)
    assert_frames_equal(every.compute(scheduler="sync"), layers_table)
    files = nd2gpu.regionprops_dask([path, str(other)], frames_per_chunk=6)
    assert files.npartitions == 4
    got = files.compute(scheduler="threads")
    with nd2gpu.ND2File(other) as f:
        other_table = frame_of(f.binary_data.regionprops_table())
    expected = pandas.concat(
        [
            layers_table.assign(path=str(path)),
            other_table.assign(path=str(other)),
        ],
        ignore_index=True,
    )
    expected = expected[["path", *layers_table.columns]]
    assert_frames_equal(got, expected)
    single = nd2gpu.regionprops_dask(path).compute(scheduler="sync")
    assert_frames_equal(single, layers_table.assign(path=str(path))[expected.columns])


def test_meta_matches_partitions(make_nd2):
    path, _ = make_nd2()
    df = nd2gpu.regionprops_dask(path, properties=ALL, intensity="Mono")
    computed = df.compute(scheduler="sync")
    assert list(df.columns) == list(computed.columns)
    for name in df.columns:
        if name != "path":
            assert df.dtypes[name] == computed.dtypes[name], name
    assert len(computed) > 0 and computed["intensity_mean"].notna().all()


def test_tasks_pickle_and_empty_files(make_nd2, tmp_path):
    path, _ = make_nd2()
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
    part = pickle.loads(
        pickle.dumps((layer.ref, range(2), ("label", "area"), None, None, None, 0, "p"))
    )
    df = objects_partition(*part)
    assert list(df.columns) == ["path", "layer", "frame", "T", "Z", "label", "area"]
    assert (df["frame"] < 2).all() and (df["path"] == "p").all()
    empty = nd2gpu.write_nd2(
        tmp_path / "e.nd2", {"x": np.zeros((2, 3, 3), np.uint16)}, loops=[("T", 2)]
    )
    got = nd2gpu.regionprops_dask(empty).compute(scheduler="sync")
    assert len(got) == 0 and list(got.columns)[:3] == ["path", "layer", "frame"]


def test_bad_arguments(make_nd2):
    path, _ = make_nd2()
    with pytest.raises(TypeError, match="source"):
        nd2gpu.regionprops_dask(3)
    with pytest.raises(ValueError, match="frames_per_chunk"):
        nd2gpu.regionprops_dask(path, frames_per_chunk=0)
    with pytest.raises(TypeError, match="channel"):
        nd2gpu.regionprops_dask(path, intensity=np.zeros(3))
    with pytest.raises(ValueError, match="unknown property"):
        nd2gpu.regionprops_dask(path, properties=("volume",))
    with pytest.raises(ValueError, match="device"):
        nd2gpu.regionprops_dask(path, device="gpu")


@pytest.mark.slow
def test_on_a_process_cluster(make_nd2, process_cluster):
    path, _ = make_nd2(loops=(("T", 4), ("Z", 2)))
    other, _ = make_nd2(loops=(("T", 4), ("Z", 2)), name="h.nd2")
    df = nd2gpu.regionprops_dask([path, other], frames_per_chunk=3)
    expected = df.compute(scheduler="sync")
    got = process_cluster.compute(df, sync=True)
    per_file = process_cluster.compute(df.groupby("path")["area"].sum(), sync=True)
    assert_frames_equal(got, expected)
    assert sorted(per_file.index) == sorted([str(path), str(other)])
    np.testing.assert_allclose(
        per_file[str(path)], expected[expected["path"] == str(path)]["area"].sum()
    )


@needs_cuda
@pytest.mark.usefixtures("fast_thread_switching")
def test_partitions_measured_on_cuda(make_nd2):
    path, _ = make_nd2(loops=(("T", 2),), frame_shape=(6, 7))
    on_cpu = nd2gpu.regionprops_dask(path, frames_per_chunk=1)
    on_cuda = nd2gpu.regionprops_dask(path, frames_per_chunk=1, device="cuda")
    got = on_cuda.compute(scheduler="sync")
    assert_frames_equal(got, on_cpu.compute(scheduler="sync"))
    assert type(got["area"].to_numpy()) is np.ndarray
