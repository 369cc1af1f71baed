"""Back ends: where frames are expanded into an output block.

- ``cpu``: NumPy blocks, painted by the decode threads on the host;
- ``cuda``: device blocks, the runs staged by the decode threads and expanded by
  a numba-CUDA kernel (the only package that imports ``numba.cuda`` or
  ``cupy``; loaded on first use).

Each back end is a module with the functions of ``Backend``. To add one, write
such a module and name it in ``_BACKEND_MODULES`` (and in ``nd2gpu._typing``'s
``Device``).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from .._decode.plan import DecodePlan
from .._limits import check_block
from .._typing import Device

_BACKEND_MODULES: dict[str, str] = {"cpu": ".cpu", "cuda": ".cuda"}


class Backend(Protocol):
    """What a back end module provides."""

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A new zeroed uint16 block of ``shape``."""

    def check_out(self, out: Any, shape: tuple[int, ...]) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``out`` can take ``shape``."""

    def clear(self, out: Any) -> None:
        """Zero ``out`` (a block that passed ``check_out``)."""

    def decode_frames(self, plan: DecodePlan, out: Any, *, zero: bool = False) -> None:
        """Decode ``plan`` into the ``(slots, Y, X)`` block ``out``: zeroed, or
        zeroed here first when ``zero`` (a caller's reused block)."""

    def meta(self, ndim: int) -> Any:
        """An empty uint16 array of the back end's array type (for dask)."""

    def synchronize(self) -> None:
        """Wait until the work queued on the device is done."""


def backend(device: Device) -> Backend:
    """The back end module of a resolved device name."""
    return cast(Backend, importlib.import_module(_BACKEND_MODULES[device], __name__))


def decode_block(
    plan: DecodePlan,
    shape: tuple[int, int, int],
    device: Device,
    *,
    max_bytes: int | None = None,
    out: Any = None,
) -> Any:
    """Decode a plan into a zeroed ``(slots, Y, X)`` uint16 block on ``device``.

    Parameters
    ----------
    plan : DecodePlan
        Which frame goes into which slot; slots without a job are zeros.
    shape : (slots, Y, X)
        The block's shape.
    device : {"cpu", "cuda"}
        A resolved device name.
    max_bytes : int, optional
        Refuse (``MemoryError``) a new block larger than this.
    out : array, optional
        A block to fill instead of a new one (NumPy on "cpu", a CUDA array on
        "cuda"), of exactly ``shape``, uint16 and C-contiguous.

    Returns
    -------
    numpy.ndarray or device array
        ``out`` when given, else a new block: NumPy on "cpu"; on "cuda" a CuPy
        array (a simulated device array under numba's CUDA simulator).
    """
    impl = backend(device)
    if out is None:
        check_block(shape, max_bytes)
        block = impl.zeros(shape)
    else:
        impl.check_out(out, shape)
        block = out
    if plan.n_jobs:
        impl.decode_frames(plan, block, zero=out is not None)
    elif out is not None:
        impl.clear(block)
    return block
