"""The GPUs nd2gpu's CUDA kernels must build for, their per-SM limits, and the
checks a launch and a build must pass on each (build and test tooling: not in
the wheel).

- ``ARCHITECTURES``: compute capability 7.5 to 12.0, the limits of each from the
  CUDA C++ Programming Guide's table of technical specifications;
- ``occupancy``: resident blocks per SM, as CUDA's occupancy calculator computes
  them from registers, threads and shared memory;
- ``launch_problems``: what a launch configuration breaks on an architecture.

An ``Architecture`` has the attributes of ``nd2gpu.kernels._cuda_registry.
DeviceShape``, so launch functions size grids for it as for a real device. Used
by tools/cuda_ptx.py, tests/test_kernels_ptx.py, tests/test_launch_config.py and
benchmarks/kernel_table.py.
"""

from __future__ import annotations

from typing import NamedTuple

from nd2gpu.kernels._cuda_registry import (
    MAX_GRID_X,
    MAX_THREADS_PER_BLOCK,
    SHARED_PER_BLOCK,
    KernelEntry,
    LaunchConfig,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Occupancy",
    "architecture",
    "launch_problems",
    "occupancy",
]


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
