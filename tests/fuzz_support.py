"""Oracles and mutations shared by tests/test_fuzz.py and tests/fuzz_atheris.py.

Two oracles compare nd2gpu with the reference reader ``nd2`` on hostile input:

``check_payload(data)``
    One frame's payload. Where ``nd2._binary.decode_binary_mask`` returns an
    array, ``nd2gpu.decode_binary_mask`` must return an equal one (same shape and
    dtype); where it raises, nd2gpu must raise ``nd2gpu.DecodeError``. The
    reference allocates the frame its header claims, so it is only called for
    frames of at most ``SMALL_FRAME_PIXELS``; larger frames are checked against
    the reference run on the same stream with a header cropped to the part of the
    frame the runs can touch (exact, see ``_crop``), and frames above
    ``MAX_FRAME_PIXELS`` must be refused.

``check_file(path)``
    A whole ND2 file, opened with ``nd2.ND2File`` and ``nd2gpu.ND2File(...,
    device="cpu")``; see its docstring for the rules.

The mutations are plain functions of their parameters, so hypothesis can draw
the parameters and atheris can feed them from its byte stream.
"""

from __future__ import annotations

import io
import math
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nd2
import nd2._binary
import numpy as np
from nd2._binary import decode_binary_mask as reference_decode

import nd2gpu
from nd2gpu._chunk_format import (
    BINARY_METADATA_CHUNK,
    CHUNK_HEADER,
    CHUNKMAP_LOCATION,
    FILEMAP_SIGNATURE,
    MASK_PREFIX_BYTES,
)
from nd2gpu._frame_decode import MAX_FRAME_PIXELS
from nd2gpu._rle_encode import encode_label_frame

#: The reference is only asked to decode frames up to this size (it allocates the
#: whole frame before reading a single run).
SMALL_FRAME_PIXELS = 1 << 22
HEADER_BYTES = 28
#: Header words that are worth trying in every position.
WILD_WORDS = (
    0,
    1,
    2,
    3,
    4,
    7,
    255,
    256,
    0xFFFF,
    0x10000,
    0x10001,
    100_000,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 2,
    (1 << 32) - 1,
)


class OracleError(AssertionError):
    """nd2gpu disagreed with the reference (or raised a forbidden exception)."""


# ---------------------------------------------------------------------------
# single payloads


def peek_shape(data: bytes) -> tuple[int, int] | None:
    """``(nrows, ncols)`` of a payload's header, None if the header is unreadable."""
    try:
        head = zlib.decompressobj().decompress(data, HEADER_BYTES)
    except zlib.error:
        return None
    if len(head) < HEADER_BYTES:
        return None
    words = struct.unpack("<7I", head)
    return words[2], words[1]


def _must_refuse(call: Callable[[], Any], why: str) -> None:
    try:
        call()
    except nd2gpu.DecodeError:
        return
    except Exception as e:
        raise OracleError(f"{why}, but nd2gpu raised {e!r}, not DecodeError") from e
    raise OracleError(f"{why}, but nd2gpu returned a result")


def _decode(data: bytes) -> np.ndarray:
    try:
        return nd2gpu.decode_binary_mask(data)
    except nd2gpu.DecodeError:
        raise
    except Exception as e:
        raise OracleError(f"nd2gpu raised {e!r}, not DecodeError") from e


def _reference(data: bytes) -> np.ndarray | BaseException:
    try:
        return reference_decode(data)
    except Exception as e:
        return e


def check_payload(data: bytes) -> str:
    """Check nd2gpu against nd2 on one payload; return how the case ended.

    Returns
    -------
    str
        ``"equal"`` (both decoded, same array), ``"both-fail"`` (nd2 raised,
        nd2gpu raised DecodeError), ``"refused"`` (a frame above
        ``MAX_FRAME_PIXELS``, refused), ``"cropped"`` (a large frame checked
        against the reference on the cropped header) or ``"too-large"`` (a
        valid stream whose runs span more than ``SMALL_FRAME_PIXELS``: not
        decoded).

    Raises
    ------
    OracleError
        On any disagreement.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version words other than 3
        shape = peek_shape(data)
        if shape is None or math.prod(shape) <= SMALL_FRAME_PIXELS:
            return _against_reference(data)
        if math.prod(shape) > MAX_FRAME_PIXELS:
            _must_refuse(
                lambda: nd2gpu.decode_binary_mask(data),
                f"the header claims a {shape[0]}x{shape[1]} frame",
            )
            return "refused"
        return _against_cropped_reference(data, shape)


def _against_reference(data: bytes) -> str:
    expected = _reference(data)
    if isinstance(expected, BaseException):
        _must_refuse(
            lambda: nd2gpu.decode_binary_mask(data), f"nd2 raised {expected!r}"
        )
        return "both-fail"
    try:
        got = _decode(data)
    except nd2gpu.DecodeError as e:
        raise OracleError(f"nd2 decoded the payload but nd2gpu raised {e}") from e
    assert_same_array(got, expected)
    return "equal"


def assert_same_array(got: Any, expected: np.ndarray) -> None:
    """Same type (NumPy), dtype, shape and values."""
    if not isinstance(got, np.ndarray):
        raise OracleError(f"expected a NumPy array, got {type(got).__name__}")
    if got.dtype != expected.dtype or got.shape != expected.shape:
        raise OracleError(
            f"got {got.dtype}{got.shape}, expected {expected.dtype}{expected.shape}"
        )
    if not np.array_equal(got, expected):
        diff = np.argwhere(got != expected)
        raise OracleError(f"{len(diff)} pixels differ, first at {diff[0].tolist()}")


def _crop(words: bytes, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest frame that decodes ``words`` exactly as ``shape`` does.

    Walks the stream like the reference. Every row that has runs must stay in
    the cropped frame (the reference indexes it even when the runs write
    nothing), rows at or past ``nrows`` stay outside it (still an error there);
    columns past the furthest run end are never written. Returns None when the
    walk runs out of words (the reference then fails with ``struct.error`` or
    earlier).
    """
    nrows, ncols = shape
    n = len(words) // 4
    w = struct.unpack(f"<{n}I", words[: 4 * n])
    if n < 7:
        return None
    pos, rows, cols = 7, 0, 0
    for _ in range(w[3]):
        if pos + 9 > n:
            return None
        mask_rows, pos = w[pos + 6], pos + 9
        for _ in range(mask_rows):
            if pos + 2 > n:
                return None
            row, nruns, pos = w[pos], w[pos + 1], pos + 2
            if pos + 2 * nruns > n:
                return None
            if nruns and row < nrows:
                rows = max(rows, row + 1)
            for k in range(nruns):
                col, length = w[pos + 2 * k], w[pos + 2 * k + 1]
                if row < nrows and col < ncols:
                    cols = max(cols, min(col + length, ncols))
            pos += 2 * nruns
    return rows, cols


def _against_cropped_reference(data: bytes, shape: tuple[int, int]) -> str:
    try:
        words = zlib.decompress(data)
    except zlib.error as e:
        _must_refuse(lambda: nd2gpu.decode_binary_mask(data), f"nd2 raised {e!r}")
        return "both-fail"
    crop = _crop(words, shape)
    if crop is not None and math.prod(crop) > SMALL_FRAME_PIXELS:
        # The runs themselves cover gigabytes: beyond this oracle's memory budget
        # (nd2 would need it all); tests/test_fuzz.py checks such rows by hand.
        return "too-large"
    expected = None
    if crop is not None:
        cropped = bytearray(words)
        cropped[4:12] = struct.pack("<2I", crop[1], crop[0])
        expected = _reference(zlib.compress(bytes(cropped)))
    if crop is None or isinstance(expected, BaseException):
        _must_refuse(lambda: nd2gpu.decode_binary_mask(data), "nd2 raises")
        return "both-fail"
    try:
        got = _decode(data)
    except nd2gpu.DecodeError as e:
        raise OracleError(f"nd2 decodes the payload but nd2gpu raised {e}") from e
    if got.shape != shape or got.dtype != np.uint16:
        raise OracleError(f"got {got.dtype}{got.shape} for a {shape} frame")
    assert_same_array(got[: crop[0], : crop[1]], expected)
    if np.count_nonzero(got) != np.count_nonzero(expected):
        raise OracleError("nd2gpu wrote pixels outside the runs' extent")
    return "cropped"


# payload builders and mutations -------------------------------------------------


def label_words(labels: np.ndarray) -> bytes:
    """The inflated stream of a label image, as write_nd2 encodes it."""
    return encode_label_frame(labels)


def flip_bits(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    """Flip bit ``bit % 8`` of byte ``pos % len(data)`` for each pair."""
    if not data:
        return data
    out = bytearray(data)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def insert_bytes(data: bytes, pos: int, blob: bytes) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + blob + data[pos:]


def delete_bytes(data: bytes, pos: int, count: int) -> bytes:
    if not data:
        return data
    pos %= len(data)
    return data[:pos] + data[pos + count :]


def set_words(words: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Set word ``index % n`` to ``value`` for each pair (n words in ``words``)."""
    n = len(words) // 4
    if n == 0:
        return words
    out = bytearray(words)
    for index, value in edits:
        i = index % n
        out[4 * i : 4 * i + 4] = struct.pack("<I", value & 0xFFFFFFFF)
    return bytes(out)


# ---------------------------------------------------------------------------
# whole files


@dataclass
class Layout:
    """Where things are in a file written by write_nd2 (before any mutation)."""

    size: int
    map_offset: int
    #: (name, header offset, name length, data length) of every listed chunk.
    chunks: list[tuple[bytes, int, int, int]] = field(default_factory=list)

    @property
    def map_data(self) -> tuple[int, int]:
        """``(start, stop)`` of the chunk map's data (entries and tail)."""
        for name, offset, name_len, data_len in self.chunks:
            if name == FILEMAP_SIGNATURE:
                start = offset + CHUNK_HEADER.size + name_len
                return start, start + data_len
        raise LookupError("no chunk map")  # pragma: no cover

    def mask_chunks(self) -> list[tuple[bytes, int, int, int]]:
        return [c for c in self.chunks if c[0].startswith(b"CustomDataSeq|")]

    def entry_positions(self, data: bytes) -> list[tuple[bytes, int]]:
        """``(name, byte position of its uint64 offset)`` of every map entry."""
        start, stop = self.map_data
        out, pos = [], start
        while True:
            end = data.index(b"!", pos, stop)
            name = data[pos : end + 1]
            if name.startswith(b"ND2 CHUNK MAP SIGNATURE"):
                return out
            out.append((name, end + 1))
            pos = end + 1 + 16


def layout(data: bytes) -> Layout:
    """Read the layout of an intact file (as write_nd2 writes it)."""
    _, map_offset = CHUNKMAP_LOCATION.unpack(data[-CHUNKMAP_LOCATION.size :])
    out = Layout(size=len(data), map_offset=map_offset)
    pos = 0
    while pos + CHUNK_HEADER.size <= len(data):
        magic, name_len, data_len = CHUNK_HEADER.unpack_from(data, pos)
        if magic != 0x0ABECEDA:
            pos += 4096 - pos % 4096 if pos % 4096 else 4096
            continue
        raw = data[pos + 16 : pos + 16 + name_len]
        name = raw[: raw.index(b"!") + 1]
        out.chunks.append((name, pos, name_len, data_len))
        pos += CHUNK_HEADER.size + name_len + data_len
        pos += -pos % 4096
    return out


@dataclass
class FileOutcome:
    """How ``check_file`` ended (for statistics)."""

    kind: str
    detail: str = ""


@contextmanager
def _small_frames_only() -> Iterator[None]:
    """Make the reference refuse (without allocating) frames that claim too much."""
    original = nd2._binary.decode_binary_mask

    def guarded(data: bytes, *args: Any, **kwargs: Any) -> np.ndarray:
        shape = peek_shape(data)
        if shape is not None and math.prod(shape) > SMALL_FRAME_PIXELS:
            raise _TooBigForReference(shape)
        return original(data, *args, **kwargs)

    nd2._binary.decode_binary_mask = guarded
    try:
        yield
    finally:
        nd2._binary.decode_binary_mask = original


class _TooBigForReference(Exception):
    """The reference would allocate too much, or run for too long."""


#: The reference is only asked to read files with at most this many frames.
MAX_REFERENCE_FRAMES = 4096
#: Seconds any one nd2gpu call may take on these tiny files (else: a hang).
MAX_CALL_SECONDS = 10.0


#: nd2 reads a chunk with ``fh.read(data_len)``; a corrupt, huge ``data_len`` makes
#: it try to allocate that much (MemoryError) or fail to convert it
#: (OverflowError). That is an artifact of nd2's file object, not of the data:
#: nd2 reading the same bytes from an ``io.BytesIO`` gets the chunk cut at the end
#: of the file, as nd2gpu does. Those cases use the BytesIO reading as reference.
_READ_ARTIFACTS = (MemoryError, OverflowError)


@dataclass
class _Reference:
    """What nd2 makes of a file's binary layers."""

    open_error: BaseException | None = None
    #: Error of ``binary_data`` as a whole (nd2 decodes everything eagerly).
    error: BaseException | None = None
    #: Error reading the file-level metadata that nd2gpu also reads through nd2.
    experiment_error: BaseException | None = None
    #: Error reading the ``BinaryMetadata_v1`` items (before any frame).
    metadata_error: BaseException | None = None
    layers: list[dict[str, Any]] | None = None
    #: Per layer, per frame: array, None or the exception decoding it raised.
    frames: list[list[Any]] = field(default_factory=list)
    stacked: Any = None


def _frame_by_frame(f: nd2.ND2File) -> list[list[Any]]:
    """nd2's binary_data loop, one frame at a time, keeping each frame's error."""
    rdr = f._rdr
    items = rdr._decode_chunk(BINARY_METADATA_CHUNK, strip_prefix=True)
    items = items["BinaryMetadata_v1"]
    n = rdr._seq_count()
    frames = []
    for _, item in sorted(items.items()):
        tag = item["FileTag"]
        _ = item["Name"]  # nd2 fails without it too
        row: list[Any] = []
        for seq in range(n):
            key = f"CustomDataSeq|{tag}|{seq}!".encode()
            try:
                data = rdr._load_chunk(key)[4:] if key in rdr.chunkmap else None
                row.append(nd2._binary.decode_binary_mask(data) if data else None)
            except Exception as e:
                row.append(e)
        frames.append(row)
    return frames


LAYER_ATTRS = (
    "name",
    "file_tag",
    "comp_name",
    "comp_order",
    "color",
    "color_mode",
    "state",
    "layer_id",
    "coordinate_shape",
)


def _read_reference(source: Any) -> _Reference:
    ref = _Reference()
    try:
        f = nd2.ND2File(source)
    except Exception as e:
        ref.open_error = e
        return ref
    with f:
        try:
            n_frames = math.prod(loop.count for loop in f.experiment)
        except Exception as e:
            ref.experiment_error = e
        else:
            if n_frames > MAX_REFERENCE_FRAMES:
                # nd2 walks every claimed frame index (a corrupt loop count can
                # claim billions: it would run for hours).
                ref.error = _TooBigForReference(f"{n_frames} frames")
                return ref
        try:
            layers = f.binary_data
        except Exception as e:
            ref.error = e
            if not isinstance(e, _TooBigForReference) and ref.experiment_error is None:
                try:
                    ref.frames = _frame_by_frame(f)
                except Exception as meta_error:
                    ref.metadata_error = meta_error
            return ref
        if layers is None:
            return ref
        ref.layers = [
            {a: getattr(layer, a) for a in (*LAYER_ATTRS, "frame_shape")}
            for layer in layers
        ]
        ref.frames = [list(layer.data) for layer in layers]
        for meta, layer in zip(ref.layers, layers, strict=True):
            try:
                meta["asarray"] = layer.asarray()
            except ValueError as e:
                meta["asarray"] = e
        try:
            ref.stacked = layers.asarray()
        except ValueError as e:
            ref.stacked = e
    return ref


def reference(path: Path) -> _Reference:
    """nd2's view of the file (see ``_READ_ARTIFACTS`` for the BytesIO fallback)."""
    with warnings.catch_warnings(), _small_frames_only():
        warnings.simplefilter("ignore")
        ref = _read_reference(path)
        if ref.open_error is None and _artifact(ref):
            on_path = ref.experiment_error
            ref = _read_reference(io.BytesIO(path.read_bytes()))
            # nd2gpu reads the experiment through nd2 on the path, artifact included
            ref.experiment_error = ref.experiment_error or on_path
    return ref


def _artifact(ref: _Reference) -> bool:
    errors = [ref.error, *(x for row in ref.frames for x in row)]
    return any(isinstance(e, _READ_ARTIFACTS) for e in errors)


def _gpu(call: Callable[[], Any], what: str, memory_ok: bool = False) -> Any:
    """Run an nd2gpu call; return its result or its DecodeError/ValueError.

    With ``memory_ok``, also nd2gpu's own refusal of a block larger than memory
    (a MemoryError that says so, raised before allocating).
    """
    start = time.perf_counter()
    try:
        return call()
    except ValueError as e:  # DecodeError is a ValueError
        return e
    except MemoryError as e:
        if not (memory_ok and "bytes of memory" in str(e)):
            raise OracleError(f"{what}: nd2gpu raised {e!r}") from e
        return e
    except Exception as e:
        raise OracleError(f"{what}: nd2gpu raised {e!r}") from e
    finally:
        if (took := time.perf_counter() - start) > MAX_CALL_SECONDS:
            raise OracleError(f"{what} took {took:.1f} s")


def _expect_same(got: Any, expected: Any, what: str) -> None:
    if isinstance(expected, BaseException):
        if not isinstance(got, ValueError):
            raise OracleError(f"{what}: nd2 raised {expected!r}, nd2gpu gave {got!r}")
    elif expected is None:
        if got is not None:
            raise OracleError(f"{what}: nd2 gives None, nd2gpu {got!r}")
    else:
        if isinstance(got, BaseException):
            raise OracleError(f"{what}: nd2 decodes it, nd2gpu raised {got!r}")
        try:
            assert_same_array(got, expected)
        except OracleError as e:
            raise OracleError(f"{what}: {e}") from None


def check_file(path: Path) -> FileOutcome:
    """Compare nd2gpu's binary layers with nd2's on a (possibly corrupt) file.

    Rules:

    * ``nd2.ND2File(path)`` fails: ``nd2gpu.ND2File`` (a subclass that opens the
      file through nd2) must fail the same way or with DecodeError.
    * nd2 returns binary data (or None): nd2gpu returns the same values: layer
      attributes, every frame (``layer[i]``), ``layer.data``, ``layer.asarray()``,
      ``layer.decode(all frames)`` and ``layers.asarray()``; where nd2 raises
      ValueError stacking frames or layers of different shapes, so must nd2gpu.
    * nd2's ``binary_data`` fails because nd2's ``experiment`` (file-level
      metadata nd2gpu reads through nd2) fails: nd2gpu may raise what nd2 raises
      there, or DecodeError.
    * nd2's ``binary_data`` fails on the binary data: nd2gpu raises DecodeError
      (``binary_data`` itself, or every frame that nd2 fails to decode, and the
      stacking calls); frames that nd2 decodes on their own are equal.

    Never any other exception type, and no exception from nd2gpu's ``close()``.
    """
    ref = reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ref.open_error is not None:
            try:
                nd2gpu.ND2File(path, device="cpu").close()
            except nd2gpu.DecodeError:
                pass
            except Exception as e:
                if type(e) is not type(ref.open_error):
                    raise OracleError(
                        f"nd2 fails to open with {ref.open_error!r}, nd2gpu with {e!r}"
                    ) from e
            else:
                raise OracleError(f"nd2 fails to open ({ref.open_error!r}), nd2gpu not")
            return FileOutcome("open-fails", type(ref.open_error).__name__)
        with nd2gpu.ND2File(path, device="cpu") as f:
            try:
                layers = f.binary_data
            except nd2gpu.DecodeError as e:
                if ref.error is None:
                    raise OracleError(f"nd2 reads binary_data; nd2gpu: {e}") from e
                return FileOutcome("binary-data-fails", type(ref.error).__name__)
            except Exception as e:
                if ref.experiment_error is None or type(e) is not type(
                    ref.experiment_error
                ):
                    raise OracleError(f"binary_data: nd2gpu raised {e!r}") from e
                return FileOutcome("experiment-fails", type(e).__name__)
            if layers is None:
                if ref.error is None and ref.layers is not None:
                    raise OracleError("nd2 has binary layers, nd2gpu None")
                if ref.error is not None and not isinstance(
                    ref.error, _TooBigForReference
                ):
                    raise OracleError(f"nd2 raised {ref.error!r}, nd2gpu gave None")
                return FileOutcome("no-layers")
            if isinstance(ref.error, _TooBigForReference):
                _exercise(layers)
                return FileOutcome("too-big-for-reference")
            if ref.error is not None:
                return _compare_failing(layers, ref)
            if ref.layers is None:
                raise OracleError("nd2 has no binary layers, nd2gpu has")
            _compare(layers, ref)
            return FileOutcome("equal")


def _exercise(layers: nd2gpu.BinaryLayers) -> None:
    """Every kind of call, without a reference: only the exception types (and
    the time each call takes) are checked."""
    for layer in layers:
        n = len(layer)
        for seq in {*range(min(n, 16)), n - 1} - {-1}:
            _gpu(lambda layer=layer, seq=seq: layer[seq], "layer[i]")
        _gpu(lambda layer=layer: layer.frame_shape, "frame_shape")
        _gpu(layer.asarray, "layer.asarray()", memory_ok=True)
        _gpu(lambda layer=layer, n=n: layer.decode([0, -1] if n else []), "decode()")
    _gpu(layers.asarray, "layers.asarray()", memory_ok=True)


def _compare(layers: nd2gpu.BinaryLayers, ref: _Reference) -> None:
    assert ref.layers is not None
    if len(layers) != len(ref.layers):
        raise OracleError(f"{len(layers)} layers, nd2 has {len(ref.layers)}")
    for i, (layer, meta, frames) in enumerate(
        zip(layers, ref.layers, ref.frames, strict=True)
    ):
        for attr in LAYER_ATTRS:
            if getattr(layer, attr) != meta[attr]:
                raise OracleError(f"layer {i} {attr}: {getattr(layer, attr)!r}")
        if len(layer) != len(frames):
            raise OracleError(f"layer {i}: {len(layer)} frames, nd2 {len(frames)}")
        for seq, expected in enumerate(frames):
            _expect_same(
                _gpu(lambda layer=layer, seq=seq: layer[seq], "layer[i]"),
                expected,
                f"layer {i} frame {seq}",
            )
        shape = _gpu(lambda layer=layer: layer.frame_shape, "frame_shape")
        if shape != meta["frame_shape"]:
            raise OracleError(f"layer {i} frame_shape {shape!r} != {meta}")
        data = _gpu(lambda layer=layer: layer.data, "layer.data")
        if isinstance(data, BaseException):
            raise OracleError(f"layer {i}: nd2 gives .data, nd2gpu raised {data!r}")
        for seq, (got, expected) in enumerate(zip(data, frames, strict=True)):
            _expect_same(got, expected, f"layer {i} .data[{seq}]")
        stack = meta["asarray"]
        _expect_same(
            _gpu(lambda layer=layer: layer.asarray(device="cpu"), "asarray"),
            stack,
            f"layer {i} asarray()",
        )
        if isinstance(stack, np.ndarray):
            batch = _gpu(lambda layer=layer: layer.decode(range(len(layer))), "decode")
            _expect_same(batch, stack.reshape(-1, *stack.shape[-2:]), "decode()")
    _expect_same(
        _gpu(lambda: layers.asarray(device="cpu"), "layers.asarray()"),
        ref.stacked,
        "layers.asarray()",
    )


def _compare_failing(layers: nd2gpu.BinaryLayers, ref: _Reference) -> FileOutcome:
    """nd2's binary_data failed on the binary data: nd2gpu must say DecodeError."""
    if ref.experiment_error is not None:
        _exercise(layers)
        return FileOutcome("experiment-fails", type(ref.experiment_error).__name__)
    if ref.metadata_error is not None:
        raise OracleError(
            f"nd2 fails reading the binary-layer metadata ({ref.metadata_error!r}) "
            "but nd2gpu lists layers"
        )
    if len(ref.frames) != len(layers):
        raise OracleError(f"{len(layers)} layers, nd2 has {len(ref.frames)}")
    failed = False
    for i, (layer, frames) in enumerate(zip(layers, ref.frames, strict=True)):
        if len(frames) != len(layer):
            raise OracleError(f"layer {i}: {len(layer)} frames, nd2 {len(frames)}")
        for seq, expected in enumerate(frames):
            got = _gpu(lambda layer=layer, seq=seq: layer[seq], "layer[i]")
            if isinstance(expected, _TooBigForReference):
                continue  # any array or DecodeError (checked by _gpu)
            if isinstance(expected, BaseException):
                if not isinstance(got, nd2gpu.DecodeError):
                    raise OracleError(
                        f"layer {i} frame {seq}: nd2 raised {expected!r}, "
                        f"nd2gpu gave {got!r}"
                    )
                failed = True
            else:
                _expect_same(got, expected, f"layer {i} frame {seq}")
        if any(isinstance(x, BaseException) for x in frames):
            got = _gpu(layer.asarray, "layer.asarray()")
            if not isinstance(got, nd2gpu.DecodeError):
                raise OracleError(f"layer {i}: asarray() gave {got!r}, not an error")
    got = _gpu(layers.asarray, "layers.asarray()")
    if not failed:
        raise OracleError(
            f"nd2 raised {ref.error!r} in binary_data but no frame fails in nd2gpu"
        )
    if not isinstance(got, ValueError):
        raise OracleError(f"layers.asarray() gave {got!r} though frames fail")
    return FileOutcome("binary-fails", type(ref.error).__name__)


# file mutations -----------------------------------------------------------------


def set_u64(data: bytearray, pos: int, value: int) -> None:
    data[pos : pos + 8] = (value % (1 << 64)).to_bytes(8, "little")


def _entry(data: bytes, lay: Layout, a: int) -> tuple[bytes, int]:
    entries = lay.entry_positions(data)
    return entries[a % len(entries)]


def _wild_offset(lay: Layout, a: int, b: int) -> int:
    offsets = [c[1] for c in lay.chunks]
    choices = (
        lay.size + b,  # past the end
        lay.size - 1 - b % 64,  # inside the tail
        lay.size - 40,  # the tail itself
        offsets[b % len(offsets)],  # another chunk (overlap)
        offsets[b % len(offsets)] + 1 + b % 4095,  # inside another chunk
        (1 << 63) + b,
        (1 << 64) - 1 - b % 16,
        b,
    )
    return choices[a % len(choices)]


def _wild_length(original: int, size: int, a: int, b: int) -> int:
    choices = (
        0,
        b % 8,
        max(0, original - 1 - b % 16),
        original + 1 + b % 64,
        original + 4096 * (1 + b % 4),
        size,
        size + b,
        1 << 32,
        (1 << 63) + b,
        (1 << 64) - 1,
        b,
    )
    return choices[a % len(choices)]


def m_flip_map(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in the chunk map (entries, names and the tail)."""
    start, stop = lay.map_data
    data[start + a % (stop - start)] ^= 1 << (b % 8)


def m_flip_mask_chunk(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in a mask chunk: header, name or payload."""
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[a % len(masks)]
    data[offset + b % (16 + name_len + data_len)] ^= 1 << (a // 7 % 8)


def m_flip_payload(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in the zlib stream of a mask chunk (after its prefix)."""
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[a % len(masks)]
    start = offset + 16 + name_len + MASK_PREFIX_BYTES
    data[start + b % max(1, data_len - MASK_PREFIX_BYTES)] ^= 1 << (a // 7 % 8)


def m_entry_offset(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Point a chunk-map entry somewhere wrong (outside, overlapping, inside)."""
    _, pos = _entry(bytes(data), lay, a)
    set_u64(data, pos, _wild_offset(lay, a // 11, b))


def m_mask_entry_offset(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Point a mask chunk's map entry at another chunk or at nonsense."""
    names = {c[0] for c in lay.mask_chunks()}
    entries = [e for e in lay.entry_positions(bytes(data)) if e[0] in names]
    _, pos = entries[a % len(entries)]
    set_u64(data, pos, _wild_offset(lay, a // 13, b))


def m_data_len(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Give a chunk a wrong data length (truncated, overlapping, huge)."""
    chunks = lay.mask_chunks() + [c for c in lay.chunks if c[0] == FILEMAP_SIGNATURE]
    _, offset, _, data_len = chunks[a % len(chunks)]
    set_u64(data, offset + 8, _wild_length(data_len, lay.size, a // 17, b))


def m_name_len(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Give a mask chunk a wrong name length."""
    masks = lay.mask_chunks()
    _, offset, name_len, _ = masks[a % len(masks)]
    value = _wild_length(name_len, lay.size, a // 19, b) % (1 << 32)
    data[offset + 4 : offset + 8] = value.to_bytes(4, "little")


def m_map_location(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Corrupt the chunk-map location in the file's last 8 bytes."""
    set_u64(data, len(data) - 8, _wild_offset(lay, a, b))


def m_signature(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Damage the chunk-map signature in the tail (or remove the tail)."""
    if a % 3 == 0:
        del data[len(data) - 40 :]
    else:
        data[len(data) - 40 + b % 32] ^= 1 << (a % 8)


def m_truncate(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Cut the file's tail off."""
    cut = (a * 4099 + b) % len(data)
    del data[len(data) - cut :]


def m_splice(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Insert or delete bytes in the map or a mask chunk, shifting what follows."""
    start, stop = lay.map_data
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[b % len(masks)]
    spots = (start + b % (stop - start), offset + b % (16 + name_len + data_len))
    pos = spots[a % 2]
    if a // 2 % 2:
        del data[pos : pos + 1 + a // 4 % 8]
    else:
        data[pos:pos] = bytes([a % 256]) * (1 + a // 4 % 8)


def m_flip_anywhere(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit anywhere in the file (metadata chunks included)."""
    data[(a * 65537 + b) % len(data)] ^= 1 << (a % 8)


FILE_MUTATIONS: tuple[Callable[[bytearray, Layout, int, int], None], ...] = (
    m_flip_map,
    m_flip_mask_chunk,
    m_flip_payload,
    m_entry_offset,
    m_mask_entry_offset,
    m_data_len,
    m_name_len,
    m_map_location,
    m_signature,
    m_truncate,
    m_splice,
    m_flip_anywhere,
)


def mutate_file(base: bytes, steps: list[tuple[int, int, int]]) -> bytes:
    """Apply ``FILE_MUTATIONS[op % n](a, b)`` for each ``(op, a, b)``, in order.

    Positions are computed on the intact file's layout, so later steps after a
    splice or truncation hit shifted bytes: also a useful kind of damage.
    """
    lay = layout(base)
    data = bytearray(base)
    for op, a, b in steps:
        if not data:
            break
        try:
            FILE_MUTATIONS[op % len(FILE_MUTATIONS)](data, lay, a, b)
        except (IndexError, ValueError, ZeroDivisionError):  # nothing to hit
            continue
    return bytes(data)


def base_files(directory: Path) -> dict[str, bytes]:
    """Small files written by write_nd2 to mutate (written once per directory)."""
    rng = np.random.default_rng(7)
    frames = np.zeros((2, 2, 5, 6), np.uint16)
    frames[0, 0, 1:3, 2:5] = 7
    frames[0, 1, 4, :] = 65535
    frames[1, 0] = rng.integers(0, 3, (5, 6))
    nuclei = (frames > 0).astype(np.uint8) * 3
    specs = {
        "single": ({"cells": rng.integers(0, 4, (6, 7)).astype(np.uint16)}, []),
        "loops": ({"cells": frames, "nuclei": nuclei}, [("T", 2), ("Z", 2)]),
    }
    out = {}
    for name, (labels, loops) in specs.items():
        path = directory / f"{name}.nd2"
        if not path.exists():
            nd2gpu.write_nd2(path, labels, loops=loops)
        out[name] = path.read_bytes()
    return out
