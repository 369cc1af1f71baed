"""``import nd2gpu as nd2``: nd2's public names, types and behaviour, as
docs/drop-in.md states them (and what it says still differs)."""

from __future__ import annotations

import dataclasses
import pickle

import nd2
import numpy as np
import pytest
from test_nd2file import LAYER_ATTRS

import nd2gpu


@pytest.fixture
def sample(make_nd2):
    path, labels = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b"))
    return path, np.stack([labels["a"], labels["b"]])


@pytest.mark.parametrize("name", nd2.__all__)
def test_every_public_name_of_nd2_is_reachable(name):
    ours = getattr(nd2gpu, name)
    if name in ("ND2File", "BinaryLayer", "BinaryLayers"):
        assert issubclass(ours, getattr(nd2, name))
    elif name == "__version__":
        assert isinstance(ours, str)
    else:
        assert ours is getattr(nd2, name)
    assert name in nd2gpu.__all__


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nd2gpu.nope  # noqa: B018


def test_imread_and_helpers_as_nd2(sample):
    path, _ = sample
    np.testing.assert_array_equal(nd2gpu.imread(path), nd2.imread(path))
    assert nd2gpu.is_supported_file(path) and not nd2gpu.is_legacy(path)


def test_types_are_nd2s(sample):
    path, _ = sample
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data
        assert isinstance(f, nd2.ND2File)
        assert isinstance(layers, nd2.BinaryLayers)
        assert isinstance(layers, nd2gpu.BinaryLayers)
        assert all(isinstance(layer, nd2.BinaryLayer) for layer in layers)
        assert isinstance(layers[0], nd2gpu.BinaryLayer)
        assert isinstance(layers[:1], list) and layers[:1][0] is layers[0]


def test_binary_layer_behaves_like_nd2s(sample):
    path, expected = sample
    with nd2.ND2File(path) as ref_file:
        refs = ref_file.binary_data
        ref_reprs = [repr(r) for r in refs]
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data
        assert repr(layers) == repr(refs) == "<BinaryLayers with 2 layers>"
        assert len(layers) == len(refs)
        for i, (layer, ref) in enumerate(zip(layers, refs, strict=True)):
            for attr in LAYER_ATTRS:
                assert getattr(layer, attr) == getattr(ref, attr), attr
            frames = expected[i].reshape(6, 13, 17)
            assert len(layer) == len(ref) == 6
            np.testing.assert_array_equal(layer[0], ref[0])
            np.testing.assert_array_equal(layer[-1], frames[-1])
            for got, want in zip(layer[1:4], frames[1:4], strict=True):
                np.testing.assert_array_equal(got, want)
            for got, want in zip(layer, ref, strict=True):  # iteration
                np.testing.assert_array_equal(got, want)
            assert isinstance(layer.data, list) and len(layer.data) == 6
            for got, want in zip(layer.data, ref.data, strict=True):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(layer.asarray(), ref.asarray())
            np.testing.assert_array_equal(np.asarray(layer), np.asarray(ref))
            assert np.asarray(layer, dtype=np.int32).dtype == np.int32
            with pytest.raises(IndexError):
                layer[6]
            # repr: nd2's fields, without the frames (printing decodes nothing).
            text = repr(layer)
            assert text.startswith("BinaryLayer(name=") and "data=" not in text
            for attr in ("name", "file_tag", "comp_name", "layer_id"):
                assert f"{attr}={getattr(ref, attr)!r}" in text
                assert f"{attr}={getattr(ref, attr)!r}" in ref_reprs[i]


def test_equality_is_identity_and_layers_hash(sample):
    path, _ = sample
    with nd2gpu.ND2File(path) as f, nd2gpu.ND2File(path) as g:
        a, b = f.binary_data[0], g.binary_data[0]
        assert a == a and a != b
        assert len({a, b, a}) == 2
        assert a != f.binary_data[1]


def test_dataclass_fields_work(sample):
    path, expected = sample
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        names = [field.name for field in dataclasses.fields(layer)]
        assert names == [field.name for field in dataclasses.fields(nd2.BinaryLayer)]
        assert dataclasses.is_dataclass(layer)
        values = {name: getattr(layer, name) for name in names}
        assert values["name"] == "a" and values["coordinate_shape"] == (2, 3)
        as_dict = dataclasses.asdict(layer)
        np.testing.assert_array_equal(
            np.stack(as_dict["data"]), expected[0].reshape(6, 13, 17)
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            nd2.BinaryLayer.__setattr__(layer, "name", "x")


def test_import_nd2gpu_as_nd2(sample):
    """The README's promise: change one import."""
    path, expected = sample
    import nd2gpu as nd2

    with nd2.ND2File(path) as f:
        assert isinstance(f.binary_data, nd2.BinaryLayers)
        masks = np.asarray(f.binary_data)
        assert type(masks) is np.ndarray
        np.testing.assert_array_equal(masks, expected)
        assert type(f.binary_data[0][0]) is np.ndarray
        assert type(f.binary_data[0].data[0]) is np.ndarray
        np.testing.assert_array_equal(f.asarray(), nd2.imread(path))
    data = nd2.imread(path, dask=True)
    assert data.shape == f.shape


def test_layers_pickle_like_nd2s(sample):
    path, expected = sample
    with nd2gpu.ND2File(path) as f:
        layers = pickle.loads(pickle.dumps(f.binary_data))
    np.testing.assert_array_equal(np.asarray(layers), expected)
