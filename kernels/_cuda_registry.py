"""Every numba-CUDA kernel of ``nd2gpu.kernels``, how it is launched, and what its
launches check at run time.

A kernel module provides, for each kernel:

- the kernel's Python function, undecorated;
- a signature constant: the exact numba types the launch code passes. The launch
  code compiles the function with it (``cuda.jit(SIGNATURE)(function)``, once, on
  first launch) and calls ``check_arguments(SIGNATURE.args, args)`` before every
  launch, so that a launch with other argument types fails. (The compiled kernel
  alone would not: numba-cuda's dispatcher for one signature marshals whatever
  it is given by that signature, unchecked, and the simulator runs anything.)
- a pure launch function ``launch(device, **problem)`` returning the launch
  configuration (an object with ``grid``, ``block`` and ``dynamic_shared`` in
  bytes; None when there is nothing to launch). ``device`` is anything with the
  attributes of ``DeviceShape``; on a GPU the launch code passes
  ``current_device_shape()``.

``KERNELS`` lists them, with problems to check launches for (keyword arguments of
the launch function, from tiny to past 32-bit sizes). From it, the build tooling
of the repository (tools/cuda_ptx.py, with the architectures of
tools/cuda_architectures.py: not in the wheel) compiles every kernel for every
GPU architecture nd2gpu supports with the real NVVM, assembles the PTX with
``ptxas`` and checks registers, spills and shared memory against each launch
(tests/test_kernels_ptx.py, benchmarks/kernel_table.py);
tests/test_launch_config.py checks every launch against every architecture's
limits.

To register a kernel, add one line to ``KERNELS``, e.g.::

    KernelEntry("objects", "_objects_cuda", "_objects", "OBJECTS_SIGNATURE",
                "objects_launch", ({"n_objects": 1}, {"n_objects": 2**31 + 1})),

Compile lazily (a ``functools.cache``d factory, as ``_expand_cuda.expand_kernel``):
a module-level ``@cuda.jit(SIGNATURE)`` compiles at import, which needs a GPU.

Nothing here imports ``numba.cuda`` at import time.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, Protocol

__all__ = [
    "KERNELS",
    "MAX_GRID_X",
    "MAX_THREADS_PER_BLOCK",
    "OBJECT_IMAGE_DTYPES",
    "SHARED_PER_BLOCK",
    "SIMULATOR_DEVICE",
    "DeviceShape",
    "KernelEntry",
    "LaunchConfig",
    "check_arguments",
    "current_device_shape",
    "resident_blocks",
]

#: Limits common to every architecture nd2gpu builds for (compute capability 7.5
#: to 12.0), from the CUDA C++ Programming Guide's table of technical
#: specifications per compute capability.
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID_X = 2**31 - 1
#: Shared memory (static + dynamic) a block gets without opting in to more with
#: ``cudaFuncSetAttribute``; nd2gpu's launches never opt in.
SHARED_PER_BLOCK = 48 * 1024
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class DeviceShape(NamedTuple):
    """What a launch configuration depends on: how many blocks can be resident."""

    sm_count: int
    max_threads_per_sm: int
    max_blocks_per_sm: int


class LaunchConfig(Protocol):
    """What a kernel's launch function returns (a NamedTuple with at least these)."""

    @property
    def grid(self) -> int: ...

    @property
    def block(self) -> int: ...

    @property
    def dynamic_shared(self) -> int: ...


@dataclass(frozen=True)
class KernelEntry:
    """One numba-CUDA kernel: where it lives and how it is launched.

    Parameters
    ----------
    name : str
        Short name, for tables and test ids.
    module : str
        Module under ``nd2gpu.kernels``, e.g. ``"_expand_cuda"``.
    function : str
        The kernel's Python function (undecorated) in that module.
    signature : str
        The module constant holding the kernel's numba signature (with
        ``variant``: a dict of signatures, one per variant).
    launch : str
        The module's pure launch function, ``launch(device, **problem)``.
    problems : tuple of dict
        Keyword arguments of ``launch`` to check, small to huge.
    static_shared : int or str
        Bytes of static shared memory the kernel declares (ptxas must report no
        more), or the module constant that holds them.
    variant : str, optional
        The key of the signature in ``signature``'s dict (a kernel compiled for
        several argument types, e.g. one per image dtype).
    """

    name: str
    module: str
    function: str
    signature: str
    launch: str
    problems: tuple[Mapping[str, int], ...]
    static_shared: int | str = 0
    variant: str | None = None

    def declared_static_shared(self) -> int:
        """Bytes of static shared memory the kernel declares."""
        if isinstance(self.static_shared, str):
            return int(getattr(self.load(), self.static_shared))
        return self.static_shared

    def load(self) -> ModuleType:
        """The kernel module (imports ``numba.cuda``)."""
        return importlib.import_module(f"nd2gpu.kernels.{self.module}")

    def python_function(self) -> Callable[..., None]:
        """The kernel's Python function (``py_func`` if it was decorated)."""
        obj = getattr(self.load(), self.function)
        return getattr(obj, "py_func", obj)

    def argument_types(self) -> tuple[Any, ...]:
        """The signature's argument types, in order."""
        signature = getattr(self.load(), self.signature)
        if self.variant is not None:
            signature = signature[self.variant]
        return tuple(signature.args)

    def launch_function(self) -> Callable[..., LaunchConfig | None]:
        return getattr(self.load(), self.launch)

    def parameter_names(self) -> tuple[str, ...]:
        """The kernel's parameter names, in order."""
        return tuple(inspect.signature(self.python_function()).parameters)


#: The image dtypes the objects kernel ``_reduce_intensity`` is compiled for.
OBJECT_IMAGE_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "float32",
    "float64",
)
_OBJECT_PROBLEMS: tuple[Mapping[str, int], ...] = (
    {"n_items": 1},
    {"n_items": 100_000},
    {"n_items": 2**31 + 5},
    {"n_items": 2**40},
)

#: One entry per numba-CUDA kernel of nd2gpu.kernels.
KERNELS: tuple[KernelEntry, ...] = (
    KernelEntry(
        "expand",
        "_expand_cuda",
        "_expand",
        "EXPAND_SIGNATURE",
        "expand_launch",
        (
            {"n_tiles": 1},
            {"n_tiles": 2**20},
            {"n_tiles": 2**31 + 7},
            {"n_tiles": 2**40},
        ),
    ),
    KernelEntry(
        "objects_geometry",
        "_objects_cuda",
        "_reduce_geometry",
        "GEOMETRY_SIGNATURE",
        "objects_launch",
        _OBJECT_PROBLEMS,
        static_shared="GEOMETRY_SHARED_BYTES",
    ),
    *(
        KernelEntry(
            f"objects_intensity_{dtype}",
            "_objects_cuda",
            "_reduce_intensity",
            "INTENSITY_SIGNATURES",
            "objects_launch",
            _OBJECT_PROBLEMS,
            static_shared="INTENSITY_SHARED_BYTES",
            variant=dtype,
        )
        for dtype in OBJECT_IMAGE_DTYPES
    ),
    KernelEntry(
        "objects_combine",
        "_objects_cuda",
        "_combine_rows",
        "COMBINE_SIGNATURE",
        "objects_launch",
        _OBJECT_PROBLEMS,
        static_shared="COMBINE_SHARED_BYTES",
    ),
)


class _Expected(NamedTuple):
    """One parameter's type, in the terms ``check_arguments`` compares."""

    text: str
    dtype: Any  # a NumPy dtype for arrays, None for integers
    ndim: int
    c_layout: bool
    low: int
    high: int


@functools.lru_cache(maxsize=64)
def _expected(argument_types: tuple[Any, ...]) -> tuple[_Expected, ...]:
    import numpy as np
    from numba.core import types

    out = []
    for t in argument_types:
        if isinstance(t, types.Array):
            dtype = np.dtype(str(t.dtype))
            out.append(_Expected(str(t), dtype, t.ndim, t.layout == "C", 0, 0))
        elif isinstance(t, types.Integer):
            bits = t.bitwidth
            low, high = (
                (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                if t.signed
                else (0, 2**bits - 1)
            )
            out.append(_Expected(str(t), None, 0, False, low, high))
        else:
            raise TypeError(f"cannot check arguments of type {t}")
    return tuple(out)


#: Signatures already translated for check_arguments (by identity: the same
#: signature object is checked at every launch).
_checked: dict[int, tuple[Sequence[Any], tuple[_Expected, ...]]] = {}


def check_arguments(argument_types: Sequence[Any], args: Sequence[Any]) -> None:
    """Raise ``TypeError`` unless ``args`` match the numba ``argument_types``:
    arrays of the same dtype, dimensions and C layout, integers that fit the
    declared integer type (a kernel compiled for a signature does not check).
    """
    known = _checked.get(id(argument_types))
    if known is None or known[0] is not argument_types:
        known = _checked[id(argument_types)] = (
            argument_types,
            _expected(tuple(argument_types)),
        )
    expected = known[1]
    if len(expected) != len(args):
        raise TypeError(f"{len(args)} arguments for {len(expected)} parameters")
    for i, (want, arg) in enumerate(zip(expected, args, strict=True)):
        if want.dtype is not None:
            dtype = getattr(arg, "dtype", None)
            if dtype != want.dtype:
                raise TypeError(f"argument {i}: {dtype} array, expected {want.text}")
            ndim = getattr(arg, "ndim", None)
            if ndim != want.ndim:
                raise TypeError(f"argument {i}: {ndim}-d array, expected {want.text}")
            if want.c_layout and not _c_contiguous(arg):
                raise TypeError(f"argument {i}: not C-contiguous, expected {want.text}")
        else:
            try:
                value = operator.index(arg)
            except TypeError:
                raise TypeError(
                    f"argument {i}: {type(arg).__name__}, expected {want.text}"
                ) from None
            if not want.low <= value <= want.high:
                raise TypeError(f"argument {i}: {value} does not fit {want.text}")


def _c_contiguous(arg: Any) -> bool:
    flags = getattr(arg, "flags", None)
    if isinstance(flags, dict):  # numba device arrays
        return bool(flags.get("C_CONTIGUOUS"))
    if flags is not None and hasattr(flags, "c_contiguous"):  # NumPy, CuPy
        return bool(flags.c_contiguous)
    is_c = getattr(arg, "is_c_contiguous", None)
    return bool(is_c()) if callable(is_c) else False


#: Under numba's simulator every block is a Python thread: two resident blocks.
SIMULATOR_DEVICE = DeviceShape(sm_count=1, max_threads_per_sm=2048, max_blocks_per_sm=2)
_shapes: dict[int, DeviceShape] = {}


def current_device_shape() -> DeviceShape:
    """The current CUDA device's ``DeviceShape`` (cached per device).

    ``SIMULATOR_DEVICE`` under numba's CUDA simulator.
    """
    from numba import cuda

    device = cuda.get_current_device()
    key = getattr(device, "id", -1)
    shape = _shapes.get(key)
    if shape is None:
        sm_count = getattr(device, "MULTIPROCESSOR_COUNT", None)
        if sm_count is None:
            shape = SIMULATOR_DEVICE
        else:
            shape = DeviceShape(
                int(sm_count),
                int(device.MAX_THREADS_PER_MULTIPROCESSOR),
                int(device.MAX_BLOCKS_PER_MULTIPROCESSOR),
            )
        _shapes[key] = shape
    return shape


def resident_blocks(device: DeviceShape, block: int) -> int:
    """Blocks of ``block`` threads the device holds at once (threads and blocks
    per SM only: registers and shared memory may allow fewer). ``device``: anything
    with ``DeviceShape``'s attributes."""
    per_sm = min(device.max_blocks_per_sm, device.max_threads_per_sm // block)
    return max(1, device.sm_count * max(1, per_sm))
