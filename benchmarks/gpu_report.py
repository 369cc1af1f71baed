"""gpu.md: gpu_bench.py's report as tables, from whatever part of it exists (a
run killed half-way still gets its tables)."""

from __future__ import annotations

from typing import Any


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def times(ratio: float, extrapolated: bool = False) -> str:
    """``"1234x"``, ``"~1234x"`` for an extrapolated one, ``"0.52x"``."""
    text = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}x"
    return "~" + text if extrapolated else text


def header(report: dict[str, Any]) -> list[str]:
    gpu = report["gpu"]
    device = gpu["device"]
    if "sm_count" in gpu:
        device += (
            f" ({gpu['sm_count']} SMs, compute capability "
            f"{gpu['compute_capability']}, {gpu['memory_gib']} GiB; CUDA runtime "
            f"{gpu['cuda_runtime']}, driver {gpu['cuda_driver']})"
        )
    if "cupy" in gpu:
        device += f"; CuPy {gpu['cupy']}"
    ny, nx = report["frame_shape"]
    first, size = report["batch_frames"]
    lines = [
        f"Machine: {report['machine']}; {device}; numba-cuda {gpu['numba_cuda']}; "
        f"nd2 {report['nd2_version']}; {report['threads']} decode threads, "
        f"inflater {report['inflater']}; "
        f"batches of {first}, then {size} frames, a ring of {report['ring']}. "
        f"Frames of {ny}x{nx}, each workload's distinct frames tiled to N frames "
        f"per file (files in memory); device times by CUDA events ("
        f"{report['passes']} passes a timing, queued behind a spin kernel).",
    ]
    if report["dry_run"]:
        lines.append(
            "\n**Dry run**: numba's CUDA simulator at tiny sizes; the timings mean "
            "nothing."
        )
    return lines


def first_call(report: dict[str, Any]) -> list[str]:
    first = report.get("first-call")
    if not first:
        return []
    lines = [
        "",
        f"First call in a fresh process ({first['workload']}, {first['frames']} "
        "frames; `import nd2gpu, cupy`, then `cupy.asarray(layers)` twice; the "
        "second process finds numba's caches):",
        "",
        "| process | import s | first load s | second load s | whole process s |",
        "|---|---|---|---|---|",
    ]
    for name in ("first_process", "second_process"):
        r = first[name]
        lines.append(
            f"| {name.split('_')[0]} | {r['import_s']:.2f} | {r['first_load_s']:.2f} "
            f"| {r['second_load_s']:.3f} | {r['process_s']:.1f} |"
        )
    return lines


def launch(report: dict[str, Any]) -> list[str]:
    empty = report.get("launch", {}).get("empty-kernel")
    if not empty:
        return []
    lines = [
        "",
        f"An empty kernel: {empty['host_us_per_launch']:.1f} µs per launch on the "
        f"host (numba's dispatch), {fmt(empty['device_us_per_launch'], '.2f')} µs "
        f"per launch on the device back to back ({empty['launches']} launches).",
    ]
    if empty.get("spin_error"):
        lines.append(
            f"The spin kernel did not build ({empty['spin_error']}): device times "
            "were taken without it (see the `exposed` flags)."
        )
    return lines


def file_to_cupy(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "File -> `cupy.asarray(layers)`, a fresh open per call (median), against "
        "nd2 + `cupy.asarray` (~: nd2 extrapolated from its fit):",
        "",
        "| workload | N | ms per call | ms/frame | nd2+cupy ms/frame | vs nd2 |",
        "|---|---|---|---|---|---|",
    ]
    fits = []
    for name, row in report["workloads"].items():
        sizes = (row.get("file-to-cupy") or {}).get("sizes", {})
        ups = row.get("speedups", {})
        for n, r in sizes.items():
            up = ups.get(n)
            nd2 = "" if up is None else f"{up['nd2_ms'] / int(n):.2f}"
            ratio = "" if up is None else times(up["speedup"], up["extrapolated"])
            lines.append(
                f"| {name} | {n} | {r['ms']:.2f} | {r['ms_per_frame']:.3f} "
                f"| {nd2} | {ratio} |"
            )
        fit = (row.get("file-to-cupy") or {}).get("fit")
        nd2_fit = (row.get("nd2") or {}).get("fit")
        if fit:
            text = (
                f"- {name}: {fit['fixed_ms']:.2f} ms + {fit['ms_per_frame']:.3f} "
                "ms per frame"
            )
            if nd2_fit:
                nd2_sizes = ", ".join(row["nd2"]["sizes"])
                text += (
                    f" (nd2 + cupy: {nd2_fit['fixed_ms']:.1f} ms + "
                    f"{nd2_fit['ms_per_frame']:.2f} ms per frame, from N = {nd2_sizes})"
                )
            fits.append(text)
    if fits:
        lines += ["", "Fitted, ms per call = fixed + slope x N:", "", *fits]
    return lines


def splits(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "The calling thread per call, ms (means): `outside` = open, plan, output "
        "allocation; in the pipeline: waiting for the decode threads, ring slots "
        "(a copy's end, allocation), closing batches, the device side's `submit` "
        "(copy + launch), `finish` (waiting for the device):",
        "",
        "| workload | call | ms | outside | waiting | slots | closing | submit "
        "| finish | batches |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["workloads"].items():
        cases = []
        sizes = (row.get("file-to-cupy") or {}).get("sizes", {})
        if sizes:
            n = max(sizes, key=int)
            cases.append((f"file->cupy, N={n}", sizes[n]["split"]))
        if row.get("loader"):
            cases.append((f"decode({row['loader']['batch']})", row["loader"]["split"]))
        for what, s in cases:
            if "error" in s:
                lines.append(f"| {name} | {what} | {s['error']} |")
                continue
            lines.append(
                f"| {name} | {what} | {s['call_ms']:.2f} | {s['outside_ms']:.2f} "
                f"| {s['waiting_ms']:.2f} | {s['slot_ms']:.2f} | {s['closing_ms']:.2f} "
                f"| {s['submit_ms']:.2f} | {s['finish_ms']:.2f} | {s['batches']:.1f} |"
            )
    return lines


def loader(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        'Loader: `layer.decode(random frames, device="cuda", out=buf)`, one '
        "buffer, synchronized after each call (goal: under 2 ms for 16 frames):",
        "",
        "| workload | frames | calls | median ms | p90 ms | min ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["workloads"].items():
        r = row.get("loader")
        if r:
            lines.append(
                f"| {name} | {r['batch']} | {r['calls']} | {r['median_ms']:.2f} "
                f"| {r['p90_ms']:.2f} | {r['min_ms']:.2f} |"
            )
    return lines


def kernel(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Expansion kernel: the pipeline's batches replayed, one launch each, "
        "against a device-to-device copy moving the same bytes (read + written) "
        "and the batches' host-to-device copies. Flags: `launch-bound` (kernel "
        "under twice the host's time to queue its launch), `exposed` (the device "
        "caught up with the queuing: host time may be in the figure):",
        "",
        "| workload | frames | launches | grid x block | kernel µs/launch "
        "| µs/frame | kernel GB/s | d2d copy GB/s | kernel/copy | host µs/launch "
        "| H2D GB/s | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["workloads"].items():
        r = row.get("kernel")
        if not r:
            continue
        flags = []
        if r["launch_bound"]:
            flags.append("launch-bound")
        exposed = [what for what, ok in r["hidden"].items() if ok is False]
        if exposed:
            flags.append("exposed: " + ", ".join(exposed))
        cells = [
            name,
            r["frames"],
            r["launches"],
            f"{r['grid']} x {r['block']}",
            fmt(r["kernel_us_per_launch"], ".1f"),
            fmt(r["kernel_us_per_frame"], ".2f"),
            fmt(r["kernel_gbps"], ".0f"),
            fmt(r["copy_gbps"], ".0f"),
            fmt(r["kernel_over_copy"], ".2f"),
            f"{r['host_us_per_launch']:.1f}",
            fmt(r["h2d_gbps"], ".1f"),
            ", ".join(flags),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def objects(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        'Objects: `regionprops_table(device="cuda")` from the runs (file -> CuPy '
        "columns) against nd2gpu's dense decode + cuCIM's `regionprops_table` per "
        "frame:",
        "",
        "| workload | frames | objects | runs on CUDA ms/frame "
        "| dense + cuCIM ms/frame | vs cuCIM |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["workloads"].items():
        r = row.get("objects")
        if not r:
            continue
        dense = r.get("dense_cucim_ms_per_frame")
        cucim = (
            f"{dense:.2f} | {times(r['speedup_vs_cucim'])}"
            if dense is not None
            else f"cuCIM {r['cucim']} |"
        )
        lines.append(
            f"| {name} | {r['frames']} | {r['objects']} "
            f"| {r['runs_ms_per_frame']:.3f} | {cucim} |"
        )
    return lines


def notes(report: dict[str, Any]) -> list[str]:
    lines = []
    errors = [
        f"{where}: {section}"
        for where, row in [("run", report), *report["workloads"].items()]
        for section in row.get("errors", {})
    ] + [f"launch: {section}" for section in report["launch"].get("errors", {})]
    if errors:
        lines += ["", "**Failed** (tracebacks in the JSON): " + "; ".join(errors) + "."]
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(report["skipped"]) + "."]
    if "elapsed_s" in report:
        lines += ["", f"Run time: {report['elapsed_s']:.0f} s."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    parts = [
        header(report),
        first_call(report),
        launch(report),
        file_to_cupy(report),
        splits(report),
        loader(report),
        kernel(report),
        objects(report),
        notes(report),
    ]
    return "\n".join(line for part in parts for line in part) + "\n"
