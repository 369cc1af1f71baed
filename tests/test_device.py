"""Device requests and the CUDA probe: what is usable, and what is named when not."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
from kernel_cases import REAL_GPU, SIMULATOR

from nd2gpu import DeviceUnavailableError, _device
from nd2gpu._backends.cuda import probe as probe_module


@pytest.fixture
def fresh_probe():
    probe_module.probe.cache_clear()
    yield
    probe_module.probe.cache_clear()


def _fake_cuda(available: bool) -> types.SimpleNamespace:
    def to_device(arr):  # a non-simulator API function
        return arr

    return types.SimpleNamespace(
        to_device=to_device,
        is_available=lambda: available,
        cuda_error=lambda: "CUDA driver library cannot be found",
    )


def _fake_cupy() -> types.SimpleNamespace:
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"FakeGPU"}
    )
    device = types.SimpleNamespace(id=0)
    return types.SimpleNamespace(
        __version__="13.6.0",
        cuda=types.SimpleNamespace(runtime=runtime, Device=lambda: device),
    )


def _fail(exc: Exception):
    def raise_it():
        raise exc

    return raise_it


def test_resolve_device_names():
    assert _device.resolve_device("cpu") == "cpu"
    assert _device.resolve_device(None) == "cpu"
    with pytest.raises(ValueError, match="device"):
        _device.resolve_device("gpu")


@pytest.mark.skipif(not SIMULATOR, reason="needs the CUDA simulator")
def test_simulator_is_cuda_but_never_auto():
    assert _device.simulator_active()
    assert _device.resolve_device("cuda") == "cuda"
    assert _device.resolve_device(None) == "cpu"
    assert _device.cuda_status()[0]


def test_missing_numba_cuda_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(probe_module, "_simulator_possible", lambda: True)
    monkeypatch.setattr(
        probe_module, "_import_numba_cuda", _fail(ImportError("no numba.cuda"))
    )
    with pytest.raises(DeviceUnavailableError, match="numba-cuda") as info:
        _device.resolve_device("cuda")
    assert 'nd2gpu[cuda12]"' in str(info.value)
    assert _device.resolve_device("auto") == "cpu"


def test_missing_cupy_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(probe_module, "_simulator_possible", lambda: True)
    monkeypatch.setattr(probe_module, "_import_numba_cuda", lambda: _fake_cuda(True))
    monkeypatch.setattr(probe_module, "_import_cupy", _fail(ImportError("no cupy")))
    with pytest.raises(DeviceUnavailableError, match="CuPy is not installed") as info:
        _device.resolve_device("cuda")
    assert 'nd2gpu[cuda12]"' in str(info.value)
    assert 'nd2gpu[cuda13]"' in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_cpu_only_machine_answers_without_numba_cuda(monkeypatch, fresh_probe):
    monkeypatch.setattr(probe_module, "_simulator_possible", lambda: False)
    monkeypatch.setattr(probe_module, "_cupy_installed", lambda: False)
    monkeypatch.setattr(probe_module, "_import_numba_cuda", _fail(AssertionError))
    assert _device.resolve_device("auto") == "cpu"
    assert "CuPy is not installed" in _device.cuda_status()[1]


def test_missing_driver_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(probe_module, "_simulator_possible", lambda: True)
    monkeypatch.setattr(probe_module, "_import_numba_cuda", lambda: _fake_cuda(False))
    monkeypatch.setattr(probe_module, "_import_cupy", _fake_cupy)
    with pytest.raises(DeviceUnavailableError, match="no usable CUDA driver or GPU"):
        _device.resolve_device("cuda")
    assert _device.resolve_device("auto") == "cpu"


def test_usable_gpu_is_picked_by_auto(monkeypatch, fresh_probe):
    monkeypatch.setattr(probe_module, "_simulator_possible", lambda: True)
    monkeypatch.setattr(probe_module, "_import_numba_cuda", lambda: _fake_cuda(True))
    monkeypatch.setattr(probe_module, "_import_cupy", _fake_cupy)
    assert _device.resolve_device("auto") == "cuda"
    assert _device.resolve_device("cuda") == "cuda"
    assert "FakeGPU" in _device.cuda_status()[1]


@pytest.mark.slow
def test_auto_without_simulator_in_fresh_process():
    code = (
        "import sys, nd2gpu\n"
        "lazy = 'cupy' not in sys.modules and 'numba.cuda' not in sys.modules\n"
        "from nd2gpu._device import cuda_status, resolve_device\n"
        "auto = resolve_device('auto')\n"
        "cupy = __import__('importlib.util').util.find_spec('cupy') is not None\n"
        "quiet = cupy or 'numba.cuda' not in sys.modules\n"
        "print(lazy, auto, cuda_status()[0], quiet)\n"
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    lazy, auto, usable, quiet = res.stdout.split()
    assert lazy == "True"
    # Without CuPy the probe answers without importing numba.cuda at all.
    assert quiet == "True"
    assert auto == ("cuda" if usable == "True" else "cpu")
    if not REAL_GPU:
        assert auto == "cpu"
