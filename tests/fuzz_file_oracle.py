"""The file oracle: nd2gpu against ``nd2`` on a whole (hostile) ND2 file.

``check_file(path)`` opens the file with ``nd2.ND2File`` and
``nd2gpu.ND2File(..., device="cpu")``; see its docstring for the rules. Used by
tests/test_fuzz.py and tests/fuzz_atheris.py.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nd2
import nd2._binary
import numpy as np
from fuzz_payload_oracle import (
    SMALL_FRAME_PIXELS,
    OracleError,
    assert_same_array,
    peek_shape,
    reference_warnings,
)

import nd2gpu
from nd2gpu._format.container import (
    BINARY_METADATA_CHUNK,
)


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
    with reference_warnings(), _small_frames_only():
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
