"""Settings from the environment (ND2GPU_NUM_THREADS) and the memory this process
may use (cgroup v1 and v2 limits, read from a fake cgroup tree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nd2gpu
from nd2gpu import _limits, _settings
from nd2gpu._decode import pool as decode_pool
from nd2gpu._decode import schedule

GIB = 1 << 30


@pytest.fixture
def fresh_pool(monkeypatch):
    """Decode threads made anew from the environment, the old pool restored after."""
    monkeypatch.setattr(decode_pool, "_pool", None)
    yield
    if decode_pool._pool is not None:
        decode_pool._pool.shutdown()


def test_num_threads_default_is_the_usable_cpus(monkeypatch):
    monkeypatch.delenv(_settings.NUM_THREADS_VARIABLE, raising=False)
    assert _settings.num_threads() == _settings.usable_cpus() >= 1
    monkeypatch.setenv(_settings.NUM_THREADS_VARIABLE, "  ")
    assert _settings.num_threads() == _settings.usable_cpus()


@pytest.mark.parametrize(("text", "value"), [("3", 3), (" 2 ", 2), ("1", 1)])
def test_num_threads_from_the_environment(monkeypatch, fresh_pool, text, value):
    monkeypatch.setenv("ND2GPU_NUM_THREADS", text)
    assert _settings.num_threads() == value
    decode_pool.thread_pool()
    assert decode_pool.worker_count() == value


@pytest.mark.parametrize("text", ["abc", "0", "-2", "1.5", "4 threads"])
def test_bad_num_threads_is_named(monkeypatch, fresh_pool, make_nd2, text):
    monkeypatch.setenv("ND2GPU_NUM_THREADS", text)
    message = f"ND2GPU_NUM_THREADS must be a positive integer .* not '{text}'"
    with pytest.raises(ValueError, match=message):
        _settings.num_threads()
    # On first decode: the same message, not an error from deep inside.
    path, _ = make_nd2(loops=(("T", 4),), layers=("a",), frame_shape=(512, 512))
    assert schedule.INLINE_PIXELS <= 4 * 512 * 512
    with nd2gpu.ND2File(path) as f, pytest.raises(ValueError, match=message):
        np.asarray(f.binary_data)


def test_num_threads_is_documented():
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert "ND2GPU_NUM_THREADS" in (docs / "drop-in.md").read_text()


# --- memory limits -------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def machine(monkeypatch) -> int:
    """Pretend the machine has 64 GiB."""
    monkeypatch.setattr(_limits, "_sysconf_memory", lambda: 64 * GIB)
    return 64 * GIB


def test_cgroup_v2_limit_of_the_group(tmp_path, machine):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "kubepods" / "memory.max", "max\n")
    write(root / "kubepods" / "pod1" / "memory.max", f"{3 * GIB}\n")
    membership = write(tmp_path / "cgroup.txt", "0::/kubepods/pod1\n")
    assert _limits.memory_limit(root, membership) == 3 * GIB


def test_cgroup_v2_limit_of_an_ancestor_binds(tmp_path, machine):
    root = tmp_path / "cgroup"
    write(root / "a" / "memory.max", f"{2 * GIB}\n")
    write(root / "a" / "b" / "memory.max", f"{5 * GIB}\n")
    membership = write(tmp_path / "cgroup.txt", "0::/a/b\n")
    assert _limits.memory_limit(root, membership) == 2 * GIB


def test_cgroup_v2_in_a_namespace_reads_the_mount_root(tmp_path, machine):
    root = tmp_path / "cgroup"
    write(root / "memory.max", f"{GIB}\n")
    membership = write(tmp_path / "cgroup.txt", "0::/\n")
    assert _limits.memory_limit(root, membership) == GIB


def test_cgroup_v2_without_limit_is_the_machine(tmp_path, machine):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "g" / "memory.max", "max\n")
    membership = write(tmp_path / "cgroup.txt", "0::/g\n")
    assert _limits.memory_limit(root, membership) == machine


def test_cgroup_v1_memory_controller(tmp_path, machine):
    root = tmp_path / "cgroup"
    limits = root / "memory"
    write(limits / "memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    write(limits / "docker" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(limits / "docker" / "c1" / "memory.limit_in_bytes", f"{4 * GIB}\n")
    membership = write(
        tmp_path / "cgroup.txt",
        "5:cpu,cpuacct:/docker/c1\n4:memory:/docker/c1\n1:name=systemd:/x\n",
    )
    assert _limits.memory_limit(root, membership) == 4 * GIB


def test_cgroup_hybrid_host(tmp_path, machine):
    """v1 controllers and the v2 hierarchy at unified/: the smaller limit wins."""
    root = tmp_path / "cgroup"
    write(root / "memory" / "g" / "memory.limit_in_bytes", f"{6 * GIB}\n")
    write(root / "unified" / "g" / "memory.max", f"{5 * GIB}\n")
    membership = write(tmp_path / "cgroup.txt", "4:memory:/g\n0::/g\n")
    assert _limits.memory_limit(root, membership) == 5 * GIB


def test_cgroup_limit_above_the_machine_is_the_machine(tmp_path, machine):
    root = tmp_path / "cgroup"
    write(root / "memory.max", f"{128 * GIB}\n")
    membership = write(tmp_path / "cgroup.txt", "0::/\n")
    assert _limits.memory_limit(root, membership) == machine


def test_unreadable_cgroups_are_the_machine(tmp_path, machine):
    missing = tmp_path / "nothing"
    assert _limits.memory_limit(missing, missing / "cgroup") == machine
    root = tmp_path / "cgroup"
    write(root / "memory.max", "garbage\n")
    membership = write(tmp_path / "cgroup.txt", "not a cgroup line\n0::/\n")
    assert _limits.memory_limit(root, membership) == machine


def test_physical_memory_is_this_process_limit():
    assert _limits.physical_memory() == _limits.memory_limit()
