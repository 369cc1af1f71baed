"""Build the registered CUDA kernels for real GPUs, without a GPU.

Each kernel of ``nd2gpu.kernels._cuda_registry.KERNELS`` is compiled to PTX for
each architecture of ``ARCHITECTURES`` (cuda_architectures.py beside this) by
numba-cuda with the real NVVM (``numba.cuda.compile_ptx``, the kernel's own
signature), and the PTX is assembled by ``ptxas -v`` for that
architecture, which reports registers, spills, stack and static shared memory.
Neither needs a driver. The kernel's typed IR is also checked for integers
narrowed below 64 bits (a 32-bit offset overflows past 2**31 pixels).

numba's CUDA simulator must be off (``NUMBA_ENABLE_CUDASIM=0``) in the process
that compiles; ``run_builds`` starts such processes (``python
tools/cuda_ptx.py``) from any process, simulator or not, and returns their JSON
reports. Used by tests/test_kernels_ptx.py and benchmarks/kernel_table.py; build
tooling of the repository, not in the wheel::

    python tools/cuda_ptx.py --cc 9.0,12.0      # one line per kernel and target
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cuda_architectures import (
    ARCHITECTURES,
    Architecture,
    architecture,
    launch_problems,
    occupancy,
)

from nd2gpu.kernels._cuda_registry import KERNELS, KernelEntry

__all__ = [
    "check_build",
    "find_ptxas",
    "parse_ptxas",
    "ptxas_candidates",
    "run_builds",
]


def _nvvm_library() -> str | None:
    """Path of the libNVVM numba-cuda uses, if it can tell."""
    try:
        from numba.cuda.cudadrv.libs import get_cuda_paths

        return str(get_cuda_paths()["nvvm"].info)
    except Exception:
        return None


def ptxas_candidates() -> list[str]:
    """Every ``ptxas`` to be found, in order of preference: the one of the CUDA
    that holds numba-cuda's NVVM; NVIDIA's wheels (``nvidia-cuda-nvcc``, found
    by ``cuda.pathfinder``, which also looks at ``CUDA_PATH``/``CUDA_HOME``);
    ``PATH``; ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``; ``/usr/local/cuda*/bin``."""
    found: list[str] = []
    nvvm = _nvvm_library()
    if nvvm:
        found += [str(p / "bin" / "ptxas") for p in Path(nvvm).parents[:3]]
    with contextlib.suppress(ImportError, AttributeError, RuntimeError):
        from cuda.pathfinder import find_nvidia_binary_utility

        found.append(str(find_nvidia_binary_utility("ptxas") or ""))
    found.append(shutil.which("ptxas") or "")
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(variable)
        if root:
            found.append(os.path.join(root, "bin", "ptxas"))
    found.append("/usr/local/cuda/bin/ptxas")
    found += sorted(
        (str(p) for p in Path("/usr/local").glob("cuda-*/bin/ptxas")), reverse=True
    )
    unique: dict[str, str] = {}
    for path in found:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _release_tuple(release: str | None) -> tuple[int, ...]:
    return tuple(int(n) for n in release.split(".")) if release else ()


def ptxas_release(ptxas: str) -> str | None:
    """The CUDA release of a ``ptxas`` ("13.5")."""
    done = subprocess.run(
        [ptxas, "--version"], capture_output=True, text=True, check=False
    )
    return tool_release(done.stdout)


def find_ptxas(min_release: str | None = None) -> str:
    """The preferred ``ptxas`` (see ``ptxas_candidates``) of CUDA ``min_release``
    or later: a ptxas older than the NVVM that wrote the PTX rejects it.

    Raises
    ------
    FileNotFoundError
        If there is no ptxas, or none recent enough.
    """
    candidates = ptxas_candidates()
    if not candidates:
        raise FileNotFoundError(
            "ptxas not found: install the test extra (nvidia-cuda-nvcc ships it), "
            "put ptxas on PATH or set CUDA_HOME"
        )
    if min_release is None:
        return candidates[0]
    releases = {path: ptxas_release(path) for path in candidates}
    for path, release in releases.items():
        if _release_tuple(release) >= _release_tuple(min_release):
            return path
    raise FileNotFoundError(
        f"no ptxas of CUDA {min_release} or later (the NVVM that wrote the PTX); "
        f"found {releases}: install cuda-toolkit[nvcc]=={min_release}.* or set "
        "CUDA_HOME to a newer CUDA"
    )


def tool_release(text: str) -> str | None:
    """``"13.5"`` from a ``ptxas --version`` or a PTX header ("release 13.5")."""
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def ptx_target(ptx: str) -> str | None:
    """The ``.target`` of a PTX module (``"sm_90"``)."""
    match = re.search(r"^\.target\s+(\w+)", ptx, re.MULTILINE)
    return match.group(1) if match else None


_USED = re.compile(r"Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")
_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)


def parse_ptxas(output: str) -> dict[str, int]:
    """Resource usage from ``ptxas -v`` output for one PTX module.

    Returns
    -------
    dict
        ``registers`` and ``static_shared`` of the entry function (the largest
        reported if there are several), and ``stack_bytes``, ``spill_stores``,
        ``spill_loads`` summed over every function ptxas reports.

    Raises
    ------
    ValueError
        If the output has no "Used N registers" line.
    """
    registers = static_shared = -1
    stack = stores = loads = 0
    for line in output.splitlines():
        used = _USED.search(line)
        if used:
            registers = max(registers, int(used.group(1)))
            smem = _SMEM.search(used.group(2))
            static_shared = max(static_shared, int(smem.group(1)) if smem else 0)
        frame = _FRAME.search(line)
        if frame:
            stack += int(frame.group(1))
            stores += int(frame.group(2))
            loads += int(frame.group(3))
    if registers < 0:
        raise ValueError(f"no 'Used N registers' line in ptxas output:\n{output}")
    return {
        "registers": registers,
        "static_shared": static_shared,
        "stack_bytes": stack,
        "spill_stores": stores,
        "spill_loads": loads,
    }


def assemble(ptxas: str, ptx: str, arch: Architecture, *extra: str) -> dict[str, Any]:
    """Assemble ``ptx`` for ``arch`` with ``ptxas -v``; its parsed report."""
    start = time.perf_counter()
    done = subprocess.run(
        [ptxas, "-v", f"-arch={arch.sm}", *extra, "-o", os.devnull, "-"],
        input=ptx,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"ptxas -arch={arch.sm} failed ({done.returncode}):\n{done.stderr}"
        )
    return {**parse_ptxas(done.stdout + done.stderr), "assemble_seconds": seconds}


# --- compiling (numba's simulator off) ----------------------------------------


def _cuda() -> Any:
    from numba import cuda

    if "simulator" in getattr(cuda.to_device, "__module__", ""):
        raise RuntimeError(
            "numba's CUDA simulator is on: compile with NUMBA_ENABLE_CUDASIM=0 "
            "(run_builds does)"
        )
    return cuda


def _device_dispatchers(pyfunc: Any, seen: set[int] | None = None) -> list[Any]:
    """Device-function dispatchers that ``pyfunc`` calls, transitively."""
    from numba.cuda.dispatcher import CUDADispatcher

    seen = set() if seen is None else seen
    found = []
    for name in pyfunc.__code__.co_names:
        obj = pyfunc.__globals__.get(name)
        if (
            isinstance(obj, CUDADispatcher)
            and obj.targetoptions.get("device")
            and id(obj) not in seen
        ):
            seen.add(id(obj))
            found.append(obj)
            found += _device_dispatchers(obj.py_func, seen)
    return found


@contextlib.contextmanager
def target(pyfunc: Any, cc: tuple[int, int]) -> Iterator[None]:
    """Compile the device functions ``pyfunc`` calls for ``cc``.

    numba-cuda compiles a device function called from a kernel for the *current
    device's* compute capability, which needs a driver; here it gets ``cc``
    instead, and forgets what it compiled for another one.
    """
    from numba.cuda import dispatcher

    devices = _device_dispatchers(pyfunc)
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    try:
        for device in devices:
            device.overloads.clear()
        yield
    finally:
        dispatcher.get_current_device = saved
        for device in devices:
            device.overloads.clear()


def compile_ptx(entry: KernelEntry, cc: tuple[int, int]) -> str:
    """PTX of ``entry``'s kernel for ``cc``, compiled with its signature."""
    cuda = _cuda()
    pyfunc = entry.python_function()
    with target(pyfunc, cc):
        ptx, _ = cuda.compile_ptx(pyfunc, entry.argument_types(), cc=cc)
    return ptx


def narrowed_integers(pyfunc: Any, argtypes: Sequence[Any]) -> list[str]:
    """Where the typed IR of a kernel (and of the device functions it calls)
    narrows a 64-bit integer: a cast of one to a narrower integer type, or a
    store of one into a narrower integer array. (Values that were 32-bit or less
    to begin with, such as a staged run's value, may be narrowed further.)

    numba computes integer arithmetic in 64 bits, and CUDA's 32-bit hardware
    values (thread and block indices, barrier counts) are small; an offset
    becomes 32-bit only where the code narrows it, which this finds.
    """
    from numba.core import types
    from numba.cuda.compiler import compile_cuda
    from numba.cuda.core import ir

    cc = ARCHITECTURES[0].cc
    with target(pyfunc, cc):
        cres = compile_cuda(pyfunc, types.void, tuple(argtypes), cc=cc)
        annotations = [(pyfunc.__name__, cres.type_annotation)]
        for device in _device_dispatchers(pyfunc):
            annotations += [
                (device.py_func.__name__, c.type_annotation)
                for c in device.overloads.values()
            ]

    def width(t: Any) -> int:
        return int(getattr(t, "bitwidth", 0)) if isinstance(t, types.Integer) else 0

    found = []
    for name, annotation in annotations:
        typemap = annotation.typemap
        for block in annotation.blocks.values():
            for stmt in block.body:
                where = f"{name} line {stmt.loc.line}"
                if isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Expr):
                    expr = stmt.value
                    result = typemap.get(stmt.target.name)
                    if expr.op != "call" or not 0 < width(result) < 64:
                        continue
                    callee = typemap.get(expr.func.name)
                    if isinstance(callee, types.Dispatcher):
                        continue  # checked on its own
                    key = getattr(callee, "typing_key", None)
                    module = str(getattr(key, "__module__", ""))
                    if isinstance(callee, types.Function) and (
                        "numba.cuda" in module or "intrinsic" in str(callee)
                    ):
                        continue  # CUDA intrinsics: hardware-sized values
                    widest = max(
                        (width(typemap.get(a.name)) for a in expr.args), default=0
                    )
                    if widest == 64:
                        target_name = stmt.target.name
                        found.append(f"{where}: {target_name} = {expr} is {result}")
                elif isinstance(stmt, (ir.SetItem, ir.StaticSetItem)):
                    array = typemap.get(stmt.target.name)
                    value = typemap.get(stmt.value.name)
                    dtype = getattr(array, "dtype", None)
                    if 0 < width(dtype) < width(value) == 64:
                        found.append(f"{where}: {value} stored into {array}")
    return found


def build(
    entries: Sequence[KernelEntry],
    ccs: Sequence[tuple[int, int]],
    ptxas: str | None = None,
    threads: int = 2,
    ir_check: bool = True,
) -> list[dict[str, Any]]:
    """Compile and assemble every kernel for every ``cc`` (in this process).

    numba compiles one kernel at a time (its compiler lock); then ptxas (as
    recent as the NVVM, see ``find_ptxas``) assembles them in ``threads``
    threads. One report per (kernel, cc); a failure is
    reported (``"error"``), never raised, so that every target is tried.
    ``ir_check``: also look for narrowed integers (``narrowed_integers``; the
    typed IR is the same for every cc); None in the reports without it.
    """
    reports: list[dict[str, Any]] = []
    jobs: list[tuple[dict[str, Any], str | None]] = []
    for entry in entries:
        narrowed: list[str] | str | None = None
        try:
            if ir_check:
                narrowed = narrowed_integers(
                    entry.python_function(), entry.argument_types()
                )
        except Exception as exc:
            narrowed = f"{type(exc).__name__}: {exc}"
        for cc in ccs:
            report: dict[str, Any] = {
                "kernel": entry.name,
                "cc": f"{cc[0]}.{cc[1]}",
                "narrowed_integers": narrowed,
                "error": None,
            }
            start = time.perf_counter()
            try:
                ptx = compile_ptx(entry, cc)
            except Exception as exc:
                report["error"] = f"NVVM: {type(exc).__name__}: {exc}"
                jobs.append((report, None))
                continue
            report["compile_seconds"] = time.perf_counter() - start
            report["nvvm_release"] = tool_release(ptx[:1000])
            target = ptx_target(ptx)
            if target != architecture(cc).sm:
                # numba-cuda falls back to the closest architecture its CUDA
                # supports: that is not a build for this one.
                report["error"] = (
                    f"NVVM (CUDA {report['nvvm_release']}) wrote PTX for {target}, "
                    f"not {architecture(cc).sm}: this CUDA does not support it"
                )
                jobs.append((report, None))
                continue
            jobs.append((report, ptx))
    # ptxas must be as recent as the NVVM that wrote the PTX.
    releases = [r["nvvm_release"] for r, _ in jobs if r.get("nvvm_release")]
    newest = max(releases, key=_release_tuple, default=None)
    missing = ""
    try:
        ptxas = ptxas or find_ptxas(newest)
        release = ptxas_release(ptxas)
    except FileNotFoundError as exc:
        ptxas, release, missing = None, None, str(exc)
    with ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(assemble, ptxas, code, architecture(_cc(report["cc"])))
            if code is not None and ptxas is not None
            else None
            for report, code in jobs
        ]
        for (report, code), future in zip(jobs, futures, strict=True):
            report.update(ptxas=ptxas, ptxas_release=release)
            if code is not None and ptxas is None:
                report["error"] = f"ptxas: {missing}"
            elif future is not None:
                try:
                    report.update(future.result())
                except Exception as exc:
                    report["error"] = f"ptxas: {exc}"
            reports.append(report)
    return reports


def run_builds(
    ccs: Sequence[tuple[int, int]] | None = None,
    *,
    jobs: int | None = None,
    timeout: float = 600,
) -> list[dict[str, Any]]:
    """Build every registered kernel for ``ccs`` (default: all of ARCHITECTURES)
    in ``jobs`` fresh processes with numba's simulator off; their reports.

    Raises
    ------
    RuntimeError
        If a build process fails (not a kernel: those are reported).
    """
    ccs = [a.cc for a in ARCHITECTURES] if ccs is None else list(ccs)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(ccs)))
    shares = [ccs[i::jobs] for i in range(jobs)]
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--json",
                "--cc",
                ",".join(f"{a}.{b}" for a, b in share),
                *(["--no-ir-check"] if i else []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, share in enumerate(shares)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"kernel build process failed ({proc.returncode}):\n{err}"
            )
        reports += json.loads(out)
    # The typed-IR check ran in the first process only.
    narrowed = {
        r["kernel"]: r["narrowed_integers"]
        for r in reports
        if r["narrowed_integers"] is not None
    }
    for report in reports:
        report["narrowed_integers"] = narrowed.get(report["kernel"])
    order = {cc: i for i, cc in enumerate(ccs)}
    reports.sort(key=lambda r: (r["kernel"], order[_cc(r["cc"])]))
    return reports


def _cc(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def launches(entry: KernelEntry, arch: Architecture) -> list[Any]:
    """The distinct launch configurations of ``entry``'s problems on ``arch``."""
    launch = entry.launch_function()
    seen: dict[tuple[int, int], Any] = {}
    for problem in entry.problems:
        config = launch(arch, **problem)
        if config is not None:
            seen.setdefault((config.block, config.dynamic_shared), config)
    return list(seen.values())


def check_build(report: dict[str, Any]) -> list[str]:
    """What is wrong with one build report (empty: nothing).

    It compiled and assembled; no spills; no narrowed integers; and for each
    launch its problems make: registers allow two blocks per SM, shared memory
    (static + the launch's dynamic) fits without opt-in and allows two blocks,
    and ptxas's static shared memory is no more than the entry declares.
    """
    if report.get("error"):
        return [report["error"]]
    entry = next(e for e in KERNELS if e.name == report["kernel"])
    arch = architecture(_cc(report["cc"]))
    problems = []
    if report["narrowed_integers"] is None:
        problems.append("the typed IR was not checked for narrowed integers")
    elif isinstance(report["narrowed_integers"], str):
        problems.append(f"typed IR check failed: {report['narrowed_integers']}")
    else:
        problems += [f"narrowed integer: {n}" for n in report["narrowed_integers"]]
    if report["spill_stores"] or report["spill_loads"]:
        problems.append(
            f"spills {report['spill_stores']} bytes stores, "
            f"{report['spill_loads']} bytes loads"
        )
    if report["static_shared"] > entry.declared_static_shared():
        problems.append(
            f"{report['static_shared']} bytes of static shared memory, the entry "
            f"declares {entry.declared_static_shared()}"
        )
    for config in launches(entry, arch):
        problems += launch_problems(entry, config, arch, report["static_shared"])
        shared = report["static_shared"] + config.dynamic_shared
        occ = occupancy(arch, report["registers"], config.block, shared)
        if occ.by_registers < 2:
            problems.append(
                f"{report['registers']} registers x {config.block} threads: "
                f"{occ.by_registers} blocks per SM on {arch.sm}, need 2"
            )
        if occ.blocks_per_sm < 2:
            problems.append(
                f"block {config.block}, {shared} bytes shared: {occ.blocks_per_sm} "
                f"blocks per SM on {arch.sm} (limited by {occ.limited_by}), need 2"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cc",
        default=",".join(a.label for a in ARCHITECTURES),
        help="compute capabilities, e.g. 7.5,9.0",
    )
    parser.add_argument("--kernels", default=None, help="names, default: all")
    parser.add_argument("--json", action="store_true", help="print JSON reports")
    parser.add_argument(
        "--no-ir-check", action="store_true", help="skip the narrowed-integer check"
    )
    args = parser.parse_args(argv)
    ccs = [_cc(c) for c in args.cc.split(",")]
    names = args.kernels.split(",") if args.kernels else None
    entries = [e for e in KERNELS if names is None or e.name in names]
    reports = build(entries, ccs, ir_check=not args.no_ir_check)
    if args.json:
        json.dump(reports, sys.stdout)
        return 0
    failed = 0
    for report in reports:
        problems = check_build(report)
        failed += bool(problems)
        status = "ok" if not problems else "; ".join(problems)
        usage = (
            ""
            if report.get("error")
            else f"{report['registers']} regs, {report['spill_stores']} spill bytes, "
            f"{report['static_shared']} B static smem (NVVM "
            f"{report['nvvm_release']}, ptxas {report['ptxas_release']}): "
        )
        print(f"{report['kernel']} sm_{report['cc'].replace('.', '')}: {usage}{status}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
