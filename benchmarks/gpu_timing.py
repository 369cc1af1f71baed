"""The device side of gpu_bench.py: CuPy and numba-cuda on a GPU, numba's CUDA
simulator in a dry run, and device time between CUDA events with the host's
queuing kept out.

``Gpu.device_ms`` times work the host queues (kernel launches, copies) by CUDA
events on one stream, behind a spin kernel that keeps the GPU busy until all
of it is queued: the events then bracket only device time, however slowly the
host queues. Whether the spin outlasted the queuing is checked (the start event
must still be pending when the stop event is queued), not assumed.

The spin kernel is CUDA C (``SPIN_SOURCE``, compiled by CuPy on the GPU);
``check_spin_source`` builds it here without a GPU (NVRTC, then ``ptxas`` for
the GPU's architecture), so that a typo fails the dry run, not the GPU run.
"""

from __future__ import annotations

import functools
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nd2gpu._device import to_numpy

#: The build tooling (not in the wheel): tools/cuda_ptx.py, for the spin kernel.
TOOLS = Path(__file__).resolve().parents[1] / "tools"

#: Sleeps (one thread) until ``ns`` nanoseconds of the GPU's global timer passed.
SPIN_SOURCE = r"""
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
"""
#: The architecture the GPU runs are on (H100, H200).
GPU_CC = (9, 0)


def check_spin_source(cc: tuple[int, int] = GPU_CC) -> dict[str, Any]:
    """Build ``SPIN_SOURCE`` for ``cc`` without a GPU: NVRTC to PTX (which
    leaves inline assembly unchecked), then ``ptxas``; its ``ptxas -v`` report.

    Raises
    ------
    ImportError, FileNotFoundError
        Without NVRTC (cuda-bindings) or a recent enough ptxas: the ``ptx``
        extra's CUDA toolchain.
    RuntimeError
        If either step rejects the source.
    """
    from cuda.bindings import nvrtc

    sys.path.insert(0, str(TOOLS))
    from cuda_architectures import architecture
    from cuda_ptx import assemble, find_ptxas, tool_release

    def checked(result: tuple[Any, ...]) -> Any:
        if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC: {result[0]}")
        return result[1] if len(result) > 1 else None

    program = checked(
        nvrtc.nvrtcCreateProgram(SPIN_SOURCE.encode(), b"spin.cu", 0, [], [])
    )
    try:
        options = [f"--gpu-architecture=compute_{cc[0]}{cc[1]}".encode()]
        compiled = nvrtc.nvrtcCompileProgram(program, len(options), options)
        if compiled[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            log = b" " * checked(nvrtc.nvrtcGetProgramLogSize(program))
            nvrtc.nvrtcGetProgramLog(program, log)
            raise RuntimeError(
                f"NVRTC rejects SPIN_SOURCE:\n{log.decode(errors='replace')}"
            )
        ptx = b" " * checked(nvrtc.nvrtcGetPTXSize(program))
        checked(nvrtc.nvrtcGetPTX(program, ptx))
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    text = ptx.rstrip(b"\0 ").decode()
    return assemble(find_ptxas(tool_release(text)), text, architecture(cc))


@dataclass(frozen=True)
class DeviceTime:
    """What ``Gpu.device_ms`` measured for one pass of queued work."""

    #: Device milliseconds per pass (median over rounds; None under the simulator).
    ms: float | None
    #: Host microseconds to queue one pass.
    host_us: float
    #: Whether all passes were queued before the device reached the start
    #: event (None where that cannot be told: the simulator).
    hidden: bool | None


class Gpu:
    """The device calls of the benchmark: CuPy and numba-cuda on a GPU, numba's
    simulator in a dry run (host memory, no timings, everything synchronous)."""

    def __init__(self, dry_run: bool) -> None:
        from numba import cuda

        simulated = "simulator" in getattr(cuda.to_device, "__module__", "")
        if dry_run != simulated:
            raise SystemExit(
                "--dry-run needs NUMBA_ENABLE_CUDASIM=1"
                if dry_run
                else "numba's CUDA simulator is on: the GPU benchmark needs a GPU "
                "(or --dry-run)"
            )
        self.cuda = cuda
        self.cupy: Any = None if simulated else importlib.import_module("cupy")
        self._spin: Any = None
        #: Why the spin kernel did not build, if it did not.
        self.spin_error = ""
        if self.cupy is None:
            sys.setswitchinterval(1e-4)  # the simulator's threads meet at barriers
            self.cupy_stream = None
            #: The stream of the benchmark's own launches, copies and events.
            self.stream = cuda.stream()
        else:
            self.cupy_stream = self.cupy.cuda.Stream(non_blocking=True)
            self.stream = cuda.external_stream(self.cupy_stream.ptr)

    @property
    def simulated(self) -> bool:
        return self.cupy is None

    def describe(self) -> dict[str, Any]:
        import numba_cuda  # type: ignore[import-not-found]

        info: dict[str, Any] = {"numba_cuda": getattr(numba_cuda, "__version__", "")}
        if self.cupy is None:
            return {**info, "device": "numba CUDA simulator (dry run)"}
        info["cupy"] = self.cupy.__version__
        runtime = self.cupy.cuda.runtime
        try:  # a description: never the reason a run measures nothing
            props = runtime.getDeviceProperties(self.cupy.cuda.Device().id)
            return {
                **info,
                "device": props["name"].decode(errors="replace"),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "sm_count": props["multiProcessorCount"],
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                "cuda_runtime": runtime.runtimeGetVersion(),
                "cuda_driver": runtime.driverGetVersion(),
            }
        except Exception as exc:
            return {**info, "device": f"a GPU ({type(exc).__name__}: {exc})"}

    # ------------------------------------------------------------- arrays

    def synchronize(self) -> None:
        """Wait for all work on the device."""
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()

    def layers_on_device(self, layers: Any) -> Any:
        """A file's binary layers as one device array: ``cupy.asarray(layers)``
        (the simulator has no CuPy: the same decode through ``asarray``)."""
        if self.cupy is None:
            return layers.asarray(device="cuda")
        return self.cupy.asarray(layers)

    def nd2_on_device(self, array: np.ndarray) -> Any:
        """``cupy.asarray`` of a host array."""
        if self.cupy is None:
            return self.cuda.to_device(array)
        return self.cupy.asarray(array)

    def tiles_equal(self, block: Any, distinct: np.ndarray) -> bool:
        """Whether device ``block`` holds ``distinct``'s frames tiled: frame
        ``s`` is ``distinct[s % k]`` (compared on the device, a tile at a time)."""
        k, ny, nx = distinct.shape
        if self.cupy is None:
            got = to_numpy(block).reshape(-1, k, ny, nx)
            return bool((got == distinct[None]).all())
        cp = self.cupy
        expected = cp.asarray(distinct)
        tiles = cp.asarray(block).reshape(-1, k, ny, nx)
        return all(bool((tiles[t] == expected).all()) for t in range(tiles.shape[0]))

    def device_bytes(self, nbytes: int) -> Any:
        """A numba device array of ``nbytes`` bytes (contents undefined)."""
        return self.cuda.device_array(max(nbytes, 1), np.uint8)

    # ------------------------------------------------------------- timing

    def spin(self, ms: float) -> None:
        """Keep the benchmark's stream busy for ``ms`` (nothing in a dry run, or
        where the spin kernel does not build: ``spin_error`` says why, and the
        timings are then flagged where the device caught up with the host)."""
        if self.cupy is None or self.spin_error:
            return
        if self._spin is None:
            try:
                self._spin = self.cupy.RawKernel(SPIN_SOURCE, "spin")
                self._spin.compile()
            except Exception as exc:
                self.spin_error = f"{type(exc).__name__}: {exc}"
                return
        with self.cupy_stream:  # CuPy launches on the current stream
            self._spin((1,), (1,), (np.uint64(ms * 1e6),))

    def device_ms(
        self, queue: Callable[[], None], passes: int, rounds: int = 3
    ) -> DeviceTime:
        """Device time of one call of ``queue`` (which queues work on
        ``self.stream``): ``passes`` calls between two events, queued behind a
        spin that outlasts the queuing; the median of ``rounds``."""
        cuda = self.cuda
        rounds = 1 if self.simulated else rounds
        queue()  # warm-up (compilation, allocation), then one pass timed on the host
        self.stream.synchronize()
        start = time.perf_counter()
        queue()
        host_s = time.perf_counter() - start
        self.stream.synchronize()
        spin_ms = 3 * host_s * 1e3 * passes + 2
        times, hosts, hidden = [], [], []
        for _ in range(rounds):
            begin, end = cuda.event(), cuda.event()
            self.spin(spin_ms)
            begin.record(self.stream)
            start = time.perf_counter()
            for _ in range(passes):
                queue()
            hosts.append((time.perf_counter() - start) / passes)
            end.record(self.stream)
            query = getattr(begin, "query", None)
            hidden.append(None if self.simulated or query is None else not query())
            end.synchronize()
            times.append(begin.elapsed_time(end) / passes)
        ms = statistics.median(times)
        return DeviceTime(
            ms if ms > 0 else None,
            statistics.median(hosts) * 1e6,
            None if None in hidden else all(hidden),
        )

    @functools.cached_property
    def _empty(self) -> Any:
        return self.cuda.jit("void()")(_empty_kernel)

    def launch_overhead(self, launches: int, passes: int) -> dict[str, Any]:
        """An empty kernel's cost per launch: host microseconds to queue it
        (numba's dispatch), device microseconds back to back."""
        kernel = self._empty

        def queue() -> None:
            for _ in range(launches):
                kernel[1, 32, self.stream]()

        timed = self.device_ms(queue, passes)
        device_us = None if timed.ms is None else timed.ms * 1e3 / launches
        return {
            "launches": launches * passes,
            "host_us_per_launch": timed.host_us / launches,
            "device_us_per_launch": device_us,
            "hidden": timed.hidden,
            "spin_error": self.spin_error,
        }


def _empty_kernel() -> None:
    pass
