"""nd2gpu.ND2File's binary layers against nd2's, on files written by write_nd2."""

from __future__ import annotations

import os
import pickle
import warnings

import nd2
import numpy as np
import pytest
from counting import CountingInflate
from fuzz_file_oracle import LAYER_ATTRS as METADATA_ATTRS
from nd2_surgery import chunk_offset, rewrite
from streams import payload, stream_words

import nd2gpu

#: Every public metadata attribute of a layer, compared with nd2's.
LAYER_ATTRS = (*METADATA_ATTRS, "frame_shape")


def assert_layers_match_nd2(path) -> None:
    """Every public value of nd2gpu's binary layers equals nd2's."""
    with nd2.ND2File(path) as ref_file:
        ref = ref_file.binary_data
    with nd2gpu.ND2File(path, device="cpu") as f:
        got = f.binary_data
        if ref is None:
            assert got is None
            return
        assert len(got) == len(ref)
        assert repr(got) == repr(ref)
        for g, r in zip(got, ref, strict=True):
            for attr in LAYER_ATTRS:
                assert getattr(g, attr) == getattr(r, attr), attr
            assert len(g) == len(r)
            assert_arrays_or_none_equal(g.asarray(), r.asarray())
            for gd, rd in zip(g.data, r.data, strict=True):
                assert_arrays_or_none_equal(gd, rd)
            for seq in range(-len(r), len(r)):
                assert_arrays_or_none_equal(g[seq], r[seq])
        try:
            expected = np.asarray(ref)
        except ValueError:
            with pytest.raises(ValueError):
                np.asarray(got)
        else:
            result = np.asarray(got)
            assert result.dtype == expected.dtype
            np.testing.assert_array_equal(result, expected)


def assert_arrays_or_none_equal(a, b) -> None:
    if b is None:
        assert a is None
        return
    assert a is not None
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "loops",
    [
        (),
        (("T", 3),),
        (("Z", 4),),
        (("P", 2),),
        (("T", 2), ("P", 2), ("Z", 3)),
        (("P", 3), ("Z", 2)),
        (("T", 1), ("Z", 2)),
    ],
)
@pytest.mark.parametrize("layers", [("cells",), ("cells", "nuclei", "spots")])
def test_layers_match_nd2(make_nd2, loops, layers):
    path, labels = make_nd2(loops=loops, layers=layers)
    assert_layers_match_nd2(path)
    with nd2gpu.ND2File(path) as f:
        stacked = np.asarray(f.binary_data)
    np.testing.assert_array_equal(stacked, np.stack(list(labels.values())))


@pytest.mark.parametrize("frame_shape", [(1, 1), (1, 40), (40, 1), (64, 65)])
def test_frame_shapes(make_nd2, frame_shape):
    path, _ = make_nd2(loops=(("T", 2),), frame_shape=frame_shape, max_id=65535)
    assert_layers_match_nd2(path)


def test_missing_and_empty_frames_match_nd2(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b", "c"))

    def edit(name: bytes, data: bytes):
        if name.startswith(b"CustomDataSeq|RleZipBinarySequence_1_v1|"):
            seq = int(name.split(b"|")[2][:-1])
            if seq in (0, 4):
                return None  # missing chunk
            if seq == 5:
                return data[:4]  # prefix only: no mask
        if name.startswith(b"CustomDataSeq|RleZipBinarySequence_3_v1|"):
            return None  # a layer with no frame at all
        return data

    edited = rewrite(path, tmp_path / "edited.nd2", edit)
    assert_layers_match_nd2(edited)
    with nd2gpu.ND2File(edited) as f:
        layers = f.binary_data
        assert layers[0][0] is None and layers[0][5] is None
        assert layers[2].asarray() is None and layers[2].frame_shape == (0, 0)
        assert np.asarray(layers).shape == (2, 2, 3, 13, 17)
        assert not np.asarray(layers)[0, 1, 1].any()  # seq 4 stacks as zeros


def test_no_frames_in_any_layer_raises_like_nd2(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    edited = rewrite(
        path,
        tmp_path / "empty.nd2",
        lambda name, data: None if name.startswith(b"CustomDataSeq|") else data,
    )
    assert_layers_match_nd2(edited)


def test_file_without_binary_layers_gives_none(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),))
    edited = rewrite(
        path,
        tmp_path / "plain.nd2",
        lambda name, data: None if name.startswith(b"CustomData") else data,
    )
    with nd2.ND2File(edited) as f:
        assert f.binary_data is None
    with nd2gpu.ND2File(edited) as f:
        assert f.binary_data is None
        assert f.sizes == {"T": 2, "Y": 13, "X": 17}  # the rest of nd2 still works


def test_nd2_api_still_works(make_nd2):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)))
    with nd2.ND2File(path) as ref, nd2gpu.ND2File(path) as f:
        assert isinstance(f, nd2.ND2File)
        assert f.sizes == ref.sizes
        assert f.experiment == ref.experiment
        np.testing.assert_array_equal(f.asarray(), ref.asarray())


def test_lazy_open_list_and_one_frame(make_nd2, monkeypatch):
    path, labels = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b"))
    inflates = CountingInflate(monkeypatch)
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        names = [layer.name for layer in layers]
        lengths = [len(layer) for layer in layers]
        shapes = [layer.frame_shape for layer in layers]
        repr(layers), repr(layers[0])
        assert inflates.calls == 0
        assert names == ["a", "b"] and lengths == [6, 6] and shapes == [(13, 17)] * 2

        frame = layers[1][4]
        assert inflates.calls == 1
        np.testing.assert_array_equal(frame, labels["b"][1, 1])

        layers[0].asarray()
        assert inflates.calls == 1 + 6
        np.asarray(layers)
        assert inflates.calls == 1 + 6 + 12


def held_open(path) -> int:
    """Descriptors and memory maps of this process on ``path`` (other tests'
    sockets and threads come and go: only the file itself is counted)."""
    target = os.path.realpath(path)
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # closed meanwhile
            continue
    with open("/proc/self/maps") as fh:
        maps = sum(line.rstrip().endswith(target) for line in fh)
    return fds + maps


def test_layers_still_decode_after_close_and_leave_no_descriptor(make_nd2):
    path, labels = make_nd2(loops=(("T", 2),), layers=("a",))
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data
        layers[0].frame_shape  # noqa: B018 - maps the file while it is open
        assert held_open(path) > 0
    assert held_open(path) == 0
    np.testing.assert_array_equal(np.asarray(layers)[0], labels["a"])
    np.testing.assert_array_equal(layers[0][1], labels["a"][1])
    assert held_open(path) == 0


def test_pickle_round_trip(make_nd2):
    path, labels = make_nd2(loops=(("T", 2),), layers=("a",))
    with nd2gpu.ND2File(path, device="cpu") as f:
        f.binary_data  # noqa: B018 - state that must not be pickled
        clone = pickle.loads(pickle.dumps(f))
    with clone:
        np.testing.assert_array_equal(np.asarray(clone.binary_data)[0], labels["a"])


def test_bad_device_name():
    with pytest.raises(ValueError, match="device"):
        nd2gpu.ND2File("whatever.nd2", device="gpu")


# --- corrupt files -----------------------------------------------------------


def replace_frame(path, out, tag_index: int, seq: int, new_payload: bytes):
    name = f"CustomDataSeq|RleZipBinarySequence_{tag_index}_v1|{seq}!".encode()
    return rewrite(
        path, out, lambda n, d: b"\0\0\0\0" + new_payload if n == name else d
    )


def test_corrupt_frame_names_file_layer_frame_and_offset(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a", "b"))
    bad_stream = payload(stream_words(13, 17, [(1, [(20, [(0, 1)])])]))
    bad = replace_frame(path, tmp_path / "bad.nd2", 2, 1, bad_stream)
    with nd2gpu.ND2File(bad) as f:
        layers = f.binary_data
        assert layers[1][0] is not None  # the good frames still decode one by one
        for call in (
            lambda: np.asarray(layers),
            layers[1].asarray,
            lambda: layers[1][1],
        ):
            with pytest.raises(nd2gpu.DecodeError) as info:
                call()
            err = info.value
            assert (err.path, err.layer, err.frame, err.offset) == (
                str(bad),
                "b",
                1,
                64,
            )
            message = str(err)
            assert str(bad) in message and "'b'" in message and "frame 1" in message
            assert "byte 64" in message


def test_frames_of_different_shapes_in_one_layer(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a",))
    other = payload(stream_words(5, 5, [(1, [(0, [(0, 1)])])]))
    bad = replace_frame(path, tmp_path / "shapes.nd2", 1, 2, other)
    with nd2gpu.ND2File(bad) as f:
        layer = f.binary_data[0]
        assert layer[2].shape == (5, 5)  # one frame alone decodes, as in nd2
        with pytest.raises(nd2gpu.DecodeError, match="5x5") as info:
            layer.asarray()
        assert info.value.frame == 2 and info.value.layer == "a"


def test_layers_of_different_shapes_cannot_stack(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 1),), layers=("a", "b"))
    other = payload(stream_words(5, 5, []))
    bad = replace_frame(path, tmp_path / "layers.nd2", 2, 0, other)
    with nd2gpu.ND2File(bad) as f, pytest.raises(nd2gpu.DecodeError, match="stack"):
        np.asarray(f.binary_data)


def test_chunk_offset_past_end_of_file(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    data = bytearray(path.read_bytes())
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|1!"
    entry = data.rindex(name) + len(name)
    data[entry : entry + 8] = (len(data) + 12345).to_bytes(8, "little")
    bad = tmp_path / "offset.nd2"
    bad.write_bytes(bytes(data))
    with nd2gpu.ND2File(bad) as f:
        layer = f.binary_data[0]
        assert layer[0] is not None
        with pytest.raises(nd2gpu.DecodeError, match="past the end") as info:
            layer.asarray()
        assert info.value.where == "file" and info.value.offset == len(data) + 12345


def test_chunk_header_missing_at_offset(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    data = bytearray(path.read_bytes())
    offset = chunk_offset(path, b"CustomDataSeq|RleZipBinarySequence_1_v1|0!")
    data[offset : offset + 4] = b"\0\0\0\0"
    bad = tmp_path / "magic.nd2"
    bad.write_bytes(bytes(data))
    with nd2gpu.ND2File(bad) as f, pytest.raises(nd2gpu.DecodeError, match="no chunk"):
        f.binary_data[0][0]


def test_version_warning_in_a_file(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    words = stream_words(13, 17, [(1, [(0, [(0, 2)])])], version=5)
    odd = replace_frame(path, tmp_path / "v5.nd2", 1, 1, payload(words))
    with nd2gpu.ND2File(odd) as f, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f.binary_data[0].asarray()
    assert any(
        "version" in str(w.message) and "frame 1" in str(w.message) for w in caught
    )


def test_metadata_through_public_custom_data_gives_the_same_layers(
    make_nd2, monkeypatch
):
    """The fallback used if nd2 moves its chunk decoders (see layer_metadata.py)."""
    from nd2gpu._format import layer_metadata

    path, _ = make_nd2(loops=(("T", 2),), layers=("a", "b"))
    monkeypatch.setattr(layer_metadata, "json_from_clx_lite_variant", None)
    monkeypatch.setattr(layer_metadata, "json_from_clx_variant", None)
    assert_layers_match_nd2(path)
    with nd2gpu.ND2File(path) as f:
        assert [layer.name for layer in f.binary_data] == ["a", "b"]


def test_frames_with_mask_and_path(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a",))
    edited = rewrite(
        path,
        tmp_path / "holes.nd2",
        lambda n, d: (
            None
            if n == b"CustomDataSeq|RleZipBinarySequence_1_v1|0!"
            else d[:4]
            if n == b"CustomDataSeq|RleZipBinarySequence_1_v1|2!"
            else d
        ),
    )
    with nd2gpu.ND2File(edited, device="cpu") as f:
        layer = f.binary_data[0]
        assert layer.frames_with_mask() == [1]
        assert layer.path == str(edited)
        assert [i for i, d in enumerate(layer.data) if d is not None] == [1]
