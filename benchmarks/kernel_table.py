"""The registered CUDA kernels built for every target GPU: registers, spills,
shared memory and theoretical occupancy at the launch's block size.

Compiles each kernel of ``nd2gpu.kernels._cuda_registry.KERNELS`` to PTX with
numba-cuda's NVVM and assembles it with ``ptxas -v`` for each architecture (as
tests/test_kernels_ptx.py does); no GPU needed. Writes
``results/kernels.md`` and ``results/kernels.json``; exits 1 if a build breaks a
check (spills, fewer than two blocks per SM, shared memory past the launch's
limit).

Usage::

    python benchmarks/kernel_table.py            # all kernels, all architectures
    python benchmarks/kernel_table.py --cc 9.0 --out /tmp/k
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# The build tooling (tools/: not in the wheel).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from cuda_architectures import ARCHITECTURES, architecture, occupancy
from cuda_ptx import check_build, launches, run_builds

from nd2gpu.kernels._cuda_registry import KERNELS

RESULTS = Path(__file__).parent / "results"


def rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (kernel, architecture, distinct launch)."""
    out = []
    for report in reports:
        entry = next(e for e in KERNELS if e.name == report["kernel"])
        major, minor = (int(n) for n in report["cc"].split("."))
        arch = architecture((major, minor))
        problems = check_build(report)
        base = {
            "kernel": report["kernel"],
            "cc": report["cc"],
            "sm": arch.sm,
            "part": arch.part,
            "problems": problems,
        }
        if report.get("error"):
            out.append({**base, "error": report["error"]})
            continue
        for config in launches(entry, arch):
            shared = report["static_shared"] + config.dynamic_shared
            occ = occupancy(arch, report["registers"], config.block, shared)
            out.append(
                {
                    **base,
                    **{
                        k: report[k]
                        for k in (
                            "registers",
                            "spill_stores",
                            "spill_loads",
                            "stack_bytes",
                            "static_shared",
                        )
                    },
                    "block": config.block,
                    "dynamic_shared": config.dynamic_shared,
                    "blocks_per_sm": occ.blocks_per_sm,
                    "limited_by": occ.limited_by,
                    "occupancy": occ.fraction,
                }
            )
    return out


def markdown(table: list[dict[str, Any]], reports: list[dict[str, Any]]) -> str:
    import numba_cuda

    first = reports[0]
    lines = [
        "Registered CUDA kernels built for each target architecture: PTX from "
        f"numba-cuda {numba_cuda.__version__}'s NVVM (CUDA "
        f"{first.get('nvvm_release')}), assembled by ptxas (CUDA "
        f"{first.get('ptxas_release')}) with `-v`; no GPU involved. Occupancy is "
        "theoretical (CUDA's occupancy calculator) at the launch's block size and "
        "shared memory. Written by `python benchmarks/kernel_table.py`.",
        "",
        "| kernel | arch | registers | spill st/ld (B) | stack (B) "
        "| static smem (B) | block | dynamic smem (B) | blocks/SM | occupancy "
        "| limited by | checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        checks = "ok" if not r["problems"] else "; ".join(r["problems"])
        arch = f"{r['sm']} ({r['part']})"
        if "error" in r:
            lines.append(f"| {r['kernel']} | {arch} |" + " |" * 9 + f" {checks} |")
            continue
        lines.append(
            f"| {r['kernel']} | {arch} | {r['registers']} "
            f"| {r['spill_stores']}/{r['spill_loads']} | {r['stack_bytes']} "
            f"| {r['static_shared']} | {r['block']} | {r['dynamic_shared']} "
            f"| {r['blocks_per_sm']} | {r['occupancy']:.0%} | {r['limited_by']} "
            f"| {checks} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cc",
        default=",".join(a.label for a in ARCHITECTURES),
        help="compute capabilities, e.g. 7.5,9.0 (default: all targets)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="build processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    ccs = [tuple(int(n) for n in c.split(".")) for c in args.cc.split(",")]
    start = time.perf_counter()
    reports = run_builds(ccs, jobs=args.jobs)
    seconds = time.perf_counter() - start
    table = rows(reports)
    text = markdown(table, reports)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.md").write_text(text)
    (args.out / "kernels.json").write_text(json.dumps({"rows": table}, indent=2) + "\n")
    print(text)
    print(f"{len(reports)} builds in {seconds:.1f} s", file=sys.stderr)
    return 1 if any(r["problems"] for r in table) else 0


if __name__ == "__main__":
    raise SystemExit(main())
