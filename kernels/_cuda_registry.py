"""Every numba-CUDA kernel of ``nd2gpu.kernels``, how it is launched, and the GPUs
it must build for.

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
  attributes of ``DeviceShape`` (an ``Architecture`` of ``ARCHITECTURES`` is one);
  on a GPU the launch code passes ``current_device_shape()``.

``KERNELS`` lists them, with problems to check launches for (keyword arguments of
the launch function, from tiny to past 32-bit sizes). From it,
tests/test_kernels_ptx.py compiles every kernel for every architecture of
``ARCHITECTURES`` with the real NVVM, assembles the PTX with ``ptxas`` and checks
registers, spills and shared memory against each launch;
tests/test_launch_config.py checks every launch against every architecture's
limits; benchmarks/kernel_table.py writes benchmarks/results/kernels.md.

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
    "ARCHITECTURES",
    "KERNELS",
    "MAX_GRID_X",
    "MAX_THREADS_PER_BLOCK",
    "OBJECT_IMAGE_DTYPES",
    "SHARED_PER_BLOCK",
    "Architecture",
    "DeviceShape",
    "KernelEntry",
    "LaunchConfig",
    "Occupancy",
    "check_arguments",
    "current_device_shape",
    "occupancy",
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


class Architecture(NamedTuple):
    """Per-SM limits of one compute capability (the Programming Guide's table).

    ``sm_count`` is that of the largest part of the architecture named in
    ``part``: it sizes grids in launch checks, it is not a limit.
    """

    cc: tuple[int, int]
    part: str
    sm_count: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    #: Largest shared-memory carve-out per SM, bytes.
    max_shared_per_sm: int
    #: Largest shared memory per block with opt-in, bytes.
    max_shared_per_block_optin: int
    #: Shared memory the driver reserves per resident block, bytes.
    reserved_shared_per_block: int
    #: Shared memory is allocated per block in units of this many bytes.
    shared_alloc_unit: int
    regs_per_sm: int = 65536
    max_regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    #: Registers are allocated per warp in units of this many.
    reg_alloc_unit: int = 256
    #: Warps are allocated registers in groups of this many.
    warp_alloc_granularity: int = 4
    max_threads_per_block: int = MAX_THREADS_PER_BLOCK
    max_grid_x: int = MAX_GRID_X
    shared_per_block: int = SHARED_PER_BLOCK
    warp_size: int = 32

    @property
    def sm(self) -> str:
        """The ``ptxas -arch`` name, e.g. ``sm_90``."""
        return f"sm_{self.cc[0]}{self.cc[1]}"

    @property
    def label(self) -> str:
        """``"9.0"``."""
        return f"{self.cc[0]}.{self.cc[1]}"

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // self.warp_size


#: The architectures every kernel must build for: Turing to Blackwell.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture((7, 5), "Quadro RTX 8000", 72, 1024, 16, 64 << 10, 64 << 10, 0, 256),
    Architecture((8, 0), "A100", 108, 2048, 32, 164 << 10, 163 << 10, 1024, 128),
    Architecture((8, 6), "RTX A6000", 84, 1536, 16, 100 << 10, 99 << 10, 1024, 128),
    Architecture((8, 9), "RTX 6000 Ada", 142, 1536, 24, 100 << 10, 99 << 10, 1024, 128),
    Architecture((9, 0), "H100 SXM", 132, 2048, 32, 228 << 10, 227 << 10, 1024, 128),
    Architecture((10, 0), "B200", 148, 2048, 32, 228 << 10, 227 << 10, 1024, 128),
    Architecture(
        (12, 0), "RTX PRO 6000 Blackwell", 188, 1536, 32, 100 << 10, 99 << 10, 1024, 128
    ),
)


def architecture(cc: tuple[int, int]) -> Architecture:
    """The entry of ``ARCHITECTURES`` for compute capability ``cc``."""
    for arch in ARCHITECTURES:
        if arch.cc == tuple(cc):
            return arch
    raise KeyError(f"compute capability {cc} is not one nd2gpu builds for")


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


class Occupancy(NamedTuple):
    """Resident blocks per SM for one kernel launch, and what limits them."""

    blocks_per_sm: int
    by_warps: int
    by_blocks: int
    by_registers: int
    by_shared: int
    #: Resident warps / the SM's maximum.
    fraction: float

    @property
    def limited_by(self) -> str:
        names = ("warps", "blocks", "registers", "shared")
        values = (self.by_warps, self.by_blocks, self.by_registers, self.by_shared)
        return names[values.index(min(values))]


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def occupancy(
    arch: Architecture, registers: int, block: int, shared_per_block: int
) -> Occupancy:
    """Theoretical occupancy, as CUDA's occupancy calculator computes it.

    Parameters
    ----------
    arch : Architecture
    registers : int
        Registers per thread (ptxas's "Used N registers").
    block : int
        Threads per block.
    shared_per_block : int
        Static plus dynamic shared memory per block, bytes.
    """
    warps_per_block = -(-block // arch.warp_size)
    by_warps = arch.max_warps_per_sm // warps_per_block
    by_blocks = arch.max_blocks_per_sm
    if registers > arch.max_regs_per_thread:
        by_registers = 0
    elif registers == 0:
        by_registers = by_blocks
    else:
        regs_per_warp = _round_up(registers * arch.warp_size, arch.reg_alloc_unit)
        warps = arch.max_regs_per_block // regs_per_warp
        warps -= warps % arch.warp_alloc_granularity
        by_registers = (warps // warps_per_block) * (
            arch.regs_per_sm // arch.max_regs_per_block
        )
    if shared_per_block > arch.max_shared_per_block_optin:
        by_shared = 0
    else:
        per_block = _round_up(
            shared_per_block + arch.reserved_shared_per_block, arch.shared_alloc_unit
        )
        by_shared = arch.max_shared_per_sm // per_block if per_block else by_blocks
    blocks = min(by_warps, by_blocks, by_registers, by_shared)
    return Occupancy(
        blocks,
        by_warps,
        by_blocks,
        by_registers,
        by_shared,
        blocks * warps_per_block / arch.max_warps_per_sm,
    )


def launch_problems(
    entry: KernelEntry, launch: LaunchConfig, arch: Architecture, static_shared: int
) -> list[str]:
    """What is wrong with ``launch`` of ``entry`` on ``arch`` (empty: nothing).

    Checks the limits a launch must respect whatever the kernel's resource usage:
    threads per block, grid size, and shared memory (``static_shared`` from ptxas
    or the entry, plus the launch's dynamic shared memory) without opt-in.
    """
    problems = []
    for field in ("grid", "block", "dynamic_shared"):
        value = getattr(launch, field)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{field} is {type(value).__name__}, not int")
    if problems:
        return problems
    if not 1 <= launch.block <= arch.max_threads_per_block:
        problems.append(
            f"block {launch.block} outside [1, {arch.max_threads_per_block}]"
        )
    if not 1 <= launch.grid <= arch.max_grid_x:
        problems.append(f"grid {launch.grid} outside [1, {arch.max_grid_x}]")
    if launch.dynamic_shared < 0:
        problems.append(f"dynamic shared memory {launch.dynamic_shared} < 0")
    shared = static_shared + launch.dynamic_shared
    limit = min(
        arch.shared_per_block,
        arch.max_shared_per_sm - arch.reserved_shared_per_block,
    )
    if shared > limit:
        problems.append(
            f"shared memory {static_shared} static + {launch.dynamic_shared} dynamic "
            f"= {shared} bytes > {limit} a block gets on {arch.sm} without opt-in"
        )
    return problems


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


def resident_blocks(device: DeviceShape | Architecture, block: int) -> int:
    """Blocks of ``block`` threads the device holds at once (threads and blocks
    per SM only: registers and shared memory may allow fewer)."""
    per_sm = min(device.max_blocks_per_sm, device.max_threads_per_sm // block)
    return max(1, device.sm_count * max(1, per_sm))
