"""Settings read from the environment, each validated with a clear message.

``ND2GPU_NUM_THREADS``
    Threads that inflate and parse frames (a positive integer). Default: the CPUs
    this process may run on. Read when the decode pool is first made.
"""

from __future__ import annotations

import os

NUM_THREADS_VARIABLE = "ND2GPU_NUM_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """Decode threads: ``ND2GPU_NUM_THREADS`` when set, else the usable CPUs.

    Raises
    ------
    ValueError
        If ``ND2GPU_NUM_THREADS`` is set to anything but a positive integer.
    """
    text = os.environ.get(NUM_THREADS_VARIABLE, "").strip()
    if not text:
        return usable_cpus()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{NUM_THREADS_VARIABLE} must be a positive integer (threads that "
            f"decode frames), not {text!r}; unset it to use every CPU"
        )
    return value
