"""Every input nd2 accepts: paths, ``file://``, file objects, fsspec URLs, over HTTP.

Each kind is compared with nd2 opening the same kind of input. Remote reads are
served by a loopback HTTP server (tests/http_server.py) that counts the bytes it
sends and fails on purpose.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import fsspec
import nd2
import numpy as np
import pytest
from http_server import Files, closed_port, serving
from test_nd2file import LAYER_ATTRS, assert_arrays_or_none_equal

import nd2gpu
from nd2gpu import _sources
from nd2gpu._decode.mask_source import MaskSource
from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._sources import SourceSpec, coalesce, source_spec, split_blocks

LOOPS = (("T", 3), ("Z", 2))
FRAME = (48, 64)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Files]]:
    with serving() as (base, files):
        yield base, files


@pytest.fixture
def sample(make_nd2) -> tuple[Path, np.ndarray]:
    path, labels = make_nd2(loops=LOOPS, layers=("a", "b"), frame_shape=FRAME)
    return path, np.stack([labels["a"], labels["b"]])


@pytest.fixture(scope="module")
def no_range_server() -> Iterator[tuple[str, Files]]:
    """A server that ignores Range, as ``python -m http.server`` does."""
    with serving(Files(honour_range=False)) as (base, files):
        yield base, files


def _served(sample, server, request) -> str:
    """The sample served by ``server``, at a name of this test's own."""
    base, files = server
    name = "/" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name) + ".nd2"
    files.content[name] = sample[0].read_bytes()
    files.failures.pop(name, None)
    files.reset()
    return base + name


@pytest.fixture
def url(sample, server, request) -> str:
    """The sample served over HTTP, at a name of this test's own."""
    return _served(sample, server, request)


@pytest.fixture
def no_range_url(sample, no_range_server, request) -> str:
    """The sample served by a server that ignores Range."""
    return _served(sample, no_range_server, request)


@pytest.fixture
def memory_url(sample) -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    fs.pipe("/nd2gpu-tests/f.nd2", sample[0].read_bytes())
    yield "memory://nd2gpu-tests/f.nd2"
    fs.rm("/nd2gpu-tests/f.nd2")


#: name -> function(path, url, memory_url) -> what to open.
KINDS: dict[str, Callable[[Path, str, str], Any]] = {
    "str": lambda p, u, m: str(p),
    "Path": lambda p, u, m: p,
    "open file": lambda p, u, m: open(p, "rb"),  # noqa: SIM115 - closed by ND2File
    "BytesIO": lambda p, u, m: io.BytesIO(p.read_bytes()),
    "file URL": lambda p, u, m: p.as_uri(),
    "memory URL": lambda p, u, m: m,
    "fsspec file": lambda p, u, m: fsspec.open(m, "rb").open(),
    "http URL": lambda p, u, m: u,
}


def assert_same_as_nd2(ref: nd2.ND2File, got: nd2gpu.ND2File) -> None:
    r_layers, g_layers = ref.binary_data, got.binary_data
    assert isinstance(g_layers, nd2.BinaryLayers)
    assert repr(g_layers) == repr(r_layers) and len(g_layers) == len(r_layers)
    for g, r in zip(g_layers, r_layers, strict=True):
        for attr in LAYER_ATTRS:
            assert getattr(g, attr) == getattr(r, attr), attr
        assert len(g) == len(r)
        for seq in (0, len(r) - 1, -2):
            assert_arrays_or_none_equal(g[seq], r[seq])
        for gd, rd in zip(g.data, r.data, strict=True):
            assert_arrays_or_none_equal(gd, rd)
        assert_arrays_or_none_equal(g.asarray(), r.asarray())
    expected = np.asarray(r_layers)
    result = np.asarray(g_layers)
    assert type(result) is np.ndarray and result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_input_kind_matches_nd2(kind, sample, url, memory_url):
    path, expected = sample
    with (
        nd2.ND2File(KINDS[kind](path, url, memory_url)) as ref,
        nd2gpu.ND2File(KINDS[kind](path, url, memory_url)) as f,
    ):
        assert f.path == ref.path
        assert f.sizes == ref.sizes
        assert_same_as_nd2(ref, f)
        np.testing.assert_array_equal(np.asarray(f.binary_data), expected)
        batch = f.binary_data[1].decode([5, 0, 3])
        np.testing.assert_array_equal(batch, expected[1].reshape(6, *FRAME)[[5, 0, 3]])


def test_local_inputs_keep_the_memory_map(sample):
    path, _ = sample
    for target in (path, str(path), path.as_uri()):
        with nd2gpu.ND2File(target) as f:
            assert f.binary_data[0].source.spec.kind == "local"
            with f.binary_data[0].source.reading() as index:
                assert type(index.source).__name__ == "LocalFile"
    with open(path, "rb") as fh, nd2gpu.ND2File(fh) as f:
        assert f.binary_data[0].source.spec == SourceSpec("local", str(path), str(path))


def test_storage_options_reach_the_range_requests(sample, url, server):
    _, files = server
    options = {"headers": {"X-Nd2gpu-Test": "token-1"}}
    with nd2gpu.ND2File(url, storage_options=options) as f:
        files.reset()
        layers = pickle.loads(pickle.dumps(f.binary_data))  # options travel too
    files.reset()
    np.testing.assert_array_equal(np.asarray(layers), sample[1])
    assert files.gets()
    assert all(r.headers.get("X-Nd2gpu-Test") == "token-1" for r in files.requests)


def test_one_frame_costs_its_chunk_not_the_file(sample, url, server):
    path, expected = sample
    _, files = server
    size = path.stat().st_size
    with nd2gpu.ND2File(url, device="cpu") as f:
        layer = f.binary_data[1]
        assert layer.frame_shape == FRAME
        with ChunkIndex(path) as index:
            name = f"CustomDataSeq|{layer.file_tag}|4!".encode()
            chunk = len(index.read(name))
            starts = sorted(index.offsets.values())
            offset = index.offsets[name]
            extent = starts[starts.index(offset) + 1] - offset  # header..next chunk
        files.reset()
        np.testing.assert_array_equal(layer[4], expected[1].reshape(6, *FRAME)[4])
        sent = files.bytes_sent()
        assert len(files.gets()) == 1
        assert chunk <= sent <= extent < size // 4
        # A batch: one request for neighbouring frames, only their chunks.
        files.reset()
        layer.decode([0, 1, 2])
        assert len(files.gets()) == 1
        assert files.bytes_sent() < size // 2


def test_frames_with_mask_reads_headers_only(sample, url, server):
    _, files = server
    with nd2gpu.ND2File(url) as f:
        layer = f.binary_data[0]
        files.reset()
        assert layer.frames_with_mask() == list(range(6))
        assert all(r.range[1] - r.range[0] == 16 for r in files.gets())


def test_remote_chunk_map_costs_few_requests(sample, url, server):
    _, files = server
    source = _sources.FsspecSource(url, {})
    files.reset()
    with ChunkIndex(source) as index:
        assert index.identity[0] == sample[0].stat().st_size
        assert len(index.offsets) > 12
    assert len(files.gets()) <= 2


# --- failures: one clear error naming the URL ---------------------------------


def _decode_error(call: Callable[[], object], error: type[BaseException], url: str):
    with pytest.raises(error) as info:
        call()
    assert url in str(info.value)
    # One error: no chain of the HTTP client's exceptions shown under it.
    error_value = info.value
    assert error_value.__cause__ is None
    assert error_value.__context__ is None or error_value.__suppress_context__
    return info.value


def test_404_names_the_url(sample, url, server):
    _, files = server
    with nd2gpu.ND2File(url) as f:
        layers = pickle.loads(pickle.dumps(f.binary_data))
    files.failures["/" + url.rsplit("/", 1)[1]] = "404"
    err = _decode_error(lambda: np.asarray(layers), FileNotFoundError, url)
    assert isinstance(err, OSError)


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{closed_port()}/f.nd2"
    layer_source = MaskSource(source_spec(url))
    err = _decode_error(layer_source.token, OSError, url)
    assert "ClientConnectorError" in str(err) or "refused" in str(err).lower()


def test_server_that_stops_mid_response(sample, url, server):
    _, files = server
    with nd2gpu.ND2File(url) as f:
        layer = f.binary_data[0]
        assert layer.frame_shape == FRAME
        files.failures["/" + url.rsplit("/", 1)[1]] = "drop"
        err = _decode_error(layer.asarray, OSError, url)
        assert not isinstance(err, nd2gpu.DecodeError)


def test_file_that_changed_size(sample, url, server):
    _, files = server
    name = "/" + url.rsplit("/", 1)[1]
    with nd2gpu.ND2File(url) as f:
        layers = f.binary_data
        assert layers[0].frame_shape == FRAME
        moved = pickle.loads(pickle.dumps(layers))
        files.content[name] = files.content[name][: len(files.content[name]) // 2]
        # A fresh reader (a pickled layer) checks the file's identity first.
        err = _decode_error(lambda: np.asarray(moved), nd2gpu.DecodeError, url)
        assert "changed since it was opened" in str(err)
        # The open file's reader finds its ranges cut short.
        err = _decode_error(lambda: np.asarray(layers), OSError, url)
        assert "changed" in str(err) or "cut short" in str(err)


def test_a_server_without_range_support_sends_the_file_once(
    sample, no_range_url, no_range_server
):
    """A server that answers every range request with the whole file (status
    200): the file is read once, kept while it is open, and decodes as nd2's."""
    path, expected = sample
    _, files = no_range_server
    size = path.stat().st_size
    with nd2.ND2File(no_range_url) as ref, nd2gpu.ND2File(no_range_url) as f:
        reference = np.asarray(ref.binary_data)
        files.reset()  # what nd2's reader read when opening is nd2's
        with pytest.warns(UserWarning, match="does not support range requests") as w:
            layers = f.binary_data
            np.testing.assert_array_equal(np.asarray(layers), reference)
            for layer, frames in zip(layers, reference, strict=True):
                for seq, frame in enumerate(frames.reshape(-1, *FRAME)):
                    np.testing.assert_array_equal(layer[seq], frame)
            layers[1].decode([5, 0, 3])
            layers[0].regionprops_table()
        assert len(w) == 1  # warned once
        assert all(r.range is None for r in files.gets())  # the server ignored Range
        assert files.bytes_sent() == size  # the file once, not once per frame
        assert len(files.gets()) == 1
    np.testing.assert_array_equal(reference, expected)


def test_a_server_without_range_support_and_a_file_too_large_for_memory(
    sample, no_range_url, no_range_server, url, monkeypatch
):
    """A file larger than this process's memory is not fetched whole: one small
    range request finds that the server ignores Range, and the error says what
    to do. A server that honours Range passes the same check."""
    path, expected = sample
    size = path.stat().st_size
    with nd2gpu.ND2File(no_range_url) as f, nd2gpu.ND2File(url) as good:
        monkeypatch.setattr(_sources, "physical_memory", lambda: size // 2)
        err = _decode_error(lambda: f.binary_data, OSError, no_range_url)
        assert "does not support range requests" in str(err)
        assert "download the file first" in str(err)
        assert f"larger than the {size // 2} bytes of memory" in str(err)
        np.testing.assert_array_equal(np.asarray(good.binary_data), expected)


def test_an_answer_longer_than_asked_is_not_a_short_read(sample, url, server):
    """A server that answers a range with more than asked (from its start to the
    end of the file): one error that says so, not "read 90112 of 65536 bytes"."""
    _, files = server
    files.failures["/" + url.rsplit("/", 1)[1]] = "long"
    with nd2gpu.ND2File(url) as f:
        err = _decode_error(lambda: f.binary_data, OSError, url)
    assert "does not support range requests" in str(err)
    assert re.search(r"asked for \d+ bytes at offset \d+, it sent \d+", str(err))
    assert not re.search(r"read (\d+) of (\d+) bytes", str(err))


def test_missing_fsspec_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImportError, match=r"nd2gpu\[remote\]"):
        _sources.FsspecSource("http://127.0.0.1:1/f.nd2", {})


# --- file objects ----------------------------------------------------------------


def test_file_object_cannot_be_pickled(sample):
    path, _ = sample
    with nd2gpu.ND2File(io.BytesIO(path.read_bytes())) as f:
        layers = f.binary_data
        with pytest.raises(TypeError, match="unnamed file-like object"):
            pickle.dumps(f)  # nd2's own refusal
        for obj in (layers, layers[0]):
            with pytest.raises(TypeError, match="unnamed file object <BytesIO>"):
                pickle.dumps(obj)


def test_file_object_layers_decode_only_while_open(sample):
    path, expected = sample
    with nd2gpu.ND2File(io.BytesIO(path.read_bytes())) as f:
        layer = f.binary_data[0]
        np.testing.assert_array_equal(layer[2], expected[0].reshape(6, *FRAME)[2])
    with pytest.raises(ValueError, match="file object <BytesIO> is closed"):
        layer.asarray()


def test_file_object_shares_nd2s_lock(sample):
    """nd2gpu's seek+read pairs and nd2's never interleave on one object."""
    path, expected = sample
    with nd2gpu.ND2File(io.BytesIO(path.read_bytes())) as f:
        assert f._source_spec.lock is f._rdr._fh_lock
        from concurrent.futures import ThreadPoolExecutor

        def nd2_read(i: int) -> object:
            return f.read_frame(i % 6)

        def our_read(i: int) -> np.ndarray:
            return f.binary_data[i % 2].decode(i % 6)

        with ThreadPoolExecutor(8) as pool:
            ours = list(pool.map(our_read, range(48)))
            list(pool.map(nd2_read, range(48)))
        flat = expected.reshape(2, 6, *FRAME)
        for i, got in enumerate(ours):
            np.testing.assert_array_equal(got, flat[i % 2, i % 6])


def test_text_mode_file_is_refused_like_nd2(sample):
    path, _ = sample
    with open(path) as fh, pytest.raises(ValueError, match="binary mode"):
        nd2gpu.ND2File(fh)


def test_not_a_file_is_refused():
    with pytest.raises(TypeError):
        source_spec(12345)


# --- the pieces ------------------------------------------------------------------


def test_coalesce_and_split():
    ranges = [(100, 200), (0, 10), (205, 300), (1000, 1100), (150, 160)]
    blocks = coalesce(ranges, max_gap=10, max_block=1 << 20)
    assert blocks == [(0, 10), (100, 300), (1000, 1100)]
    assert coalesce(ranges, max_gap=10, max_block=150) == [
        (0, 10),
        (100, 200),
        (205, 300),
        (1000, 1100),
    ]
    data = bytes(range(256)) * 5
    pieces = split_blocks(ranges, blocks, [data[a:b] for a, b in blocks])
    assert pieces == [data[a:b] for a, b in ranges]


def test_file_url_path():
    assert _sources.file_url_path("file:///tmp/a%20b.nd2") == "/tmp/a b.nd2"
    assert _sources.file_url_path("file://localhost/x.nd2") == "/x.nd2"
    with pytest.raises(ValueError, match="another host"):
        _sources.file_url_path("file://server/x.nd2")


def test_source_specs_pickle_as_path_or_url(sample, url):
    path, _ = sample
    options = {"headers": {"A": "b"}}
    for spec in (source_spec(path), source_spec(url, options)):
        assert pickle.loads(pickle.dumps(spec)) == spec
    assert source_spec(url, options).storage_options == options
    assert source_spec(path).name == str(path)


def test_short_reads_are_errors(sample):
    path, _ = sample
    data = path.read_bytes()
    source = _sources.FileObjectSource(io.BytesIO(data), "<x>", nullcontext())
    assert source.read_many([(0, 4), (8, 12)]) == [data[0:4], data[8:12]]
    with pytest.raises(OSError, match="read 0 of 10 bytes"):
        source.read(len(data), len(data) + 10)


def test_remote_layers_decode_after_close(sample, url):
    _, expected = sample
    with nd2gpu.ND2File(url) as f:
        layers = f.binary_data
    np.testing.assert_array_equal(np.asarray(layers), expected)
    np.testing.assert_array_equal(layers[1][5], expected[1].reshape(6, *FRAME)[5])


def test_dask_of_a_file_object_in_this_process(sample):
    path, expected = sample
    with nd2gpu.ND2File(io.BytesIO(path.read_bytes())) as f:
        x = f.binary_data.to_dask(frames_per_chunk=2)
        np.testing.assert_array_equal(x.compute(scheduler="threads"), expected)
        with pytest.raises(TypeError, match="unnamed file object"):
            pickle.dumps(x)


def test_remote_frames_on_the_cuda_path(sample, url, server):
    from kernel_cases import REAL_GPU, SIMULATOR

    if not (SIMULATOR or REAL_GPU):
        pytest.skip("no CUDA")
    _, expected = sample
    _, files = server
    with nd2gpu.ND2File(url) as f:
        layer = f.binary_data[0]
        assert layer.frame_shape == FRAME
        files.reset()
        got = layer.decode([4, 5, 3], device="cuda")
        assert len(files.gets()) == 1  # one request for the batch
        np.testing.assert_array_equal(
            got.get(), expected[0].reshape(6, *FRAME)[3:6][[1, 2, 0]]
        )


def test_a_failed_window_fails_every_frame_of_it(sample, url, server, monkeypatch):
    """Decode threads waiting for a window that failed get its error, once
    fetched."""
    from nd2gpu._decode import payloads as payloads_module
    from nd2gpu._decode.payloads import CallPayloads
    from nd2gpu._decode.plan import DecodePlan

    _, files = server
    monkeypatch.setattr(payloads_module, "PREFETCH_FRAMES", 3)
    with nd2gpu.ND2File(url) as f:
        layer = f.binary_data[0]
        assert layer.frame_shape == FRAME
        with layer.source.reading() as index:
            payloads = CallPayloads(DecodePlan.of([layer.ref], 0, range(6)), index)
            files.failures["/" + url.rsplit("/", 1)[1]] = "404"
            files.reset()
            for job in (0, 1, 2):
                with pytest.raises(FileNotFoundError, match=url):
                    payloads.views(job, job + 1)
            assert len(files.gets()) == 1  # fetched (and failed) once
            del files.failures["/" + url.rsplit("/", 1)[1]]
            views, _ = payloads.views(4, 5)  # the next window
            assert views[0] is not None


# --- ChunkIndex over a remote source: the same chunks, the same errors ----------


def _remote_index(path: Path) -> ChunkIndex:
    fs = fsspec.filesystem("memory")
    name = f"/nd2gpu-index/{path.name}"
    fs.pipe(name, path.read_bytes())
    return ChunkIndex(_sources.FsspecSource("memory://" + name.lstrip("/"), {}))


@pytest.mark.parametrize("speculative", [64 << 20, 100, 17])
def test_remote_index_reads_what_the_local_one_does(sample, monkeypatch, speculative):
    from nd2gpu._format import chunk_index

    path, _ = sample
    monkeypatch.setattr(chunk_index, "SPECULATIVE_CHUNK_BYTES", speculative)
    with ChunkIndex(path) as local, _remote_index(path) as remote:
        assert remote.source.remote and not local.source.remote
        assert remote.offsets == local.offsets
        names = sorted(local.offsets, key=local.offsets.get)
        names.append(b"CustomDataSeq|nothing|0!")
        assert remote.read_many(names) == [local.read(n) for n in names]
        assert remote.read_many(names[::-1]) == [local.read(n) for n in names[::-1]]
        assert remote.data_lengths(names) == [local.data_length(n) for n in names]
        prefix = b"CustomDataSeq|RleZipBinarySequence_1_v1|"
        assert remote.sequence_indices(prefix) == local.sequence_indices(prefix)
        assert remote.sequence_indices(prefix) is remote.sequence_indices(prefix)


def test_remote_index_raises_the_local_errors(make_nd2, tmp_path):
    from nd2_surgery import chunk_offset

    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    data = bytearray(path.read_bytes())
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|0!"
    offset = chunk_offset(path, name)
    data[offset : offset + 4] = b"\0\0\0\0"  # no chunk header at the offset
    bad = tmp_path / "magic.nd2"
    bad.write_bytes(bytes(data))
    with ChunkIndex(bad) as local, _remote_index(bad) as remote:
        for index in (local, remote):
            with pytest.raises(nd2gpu.DecodeError, match="no chunk header") as info:
                index.read_many([name])
            assert info.value.offset == offset
    (tmp_path / "short.nd2").write_bytes(bytes(data[:30]))
    for make in (ChunkIndex, _remote_index):
        with pytest.raises(nd2gpu.DecodeError, match="too short"):
            make(tmp_path / "short.nd2")
