"""nd2gpu installed as users install it works: run from outside the source tree.

    python .ci/check_install.py

In an environment with nd2gpu installed (the wheel, or the sdist) and its base
dependencies only: nd2gpu is imported from site-packages; every module of the
package imports (a walk of it with pkgutil); the shipped sample decodes to
exactly what nd2 gives; ``nd2gpu info --sample`` and ``python -m nd2gpu
--version`` run.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig

import nd2
import numpy as np

import nd2gpu
from nd2gpu.cli import sample_path


def main() -> None:
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    where = os.path.realpath(nd2gpu.__file__)
    assert where.startswith(site + os.sep), f"nd2gpu from {where}, not {site}"

    failed: dict[str, str] = {}

    def walk_error(name: str) -> None:
        failed[name] = repr(sys.exc_info()[1])

    modules = [
        m.name
        for m in pkgutil.walk_packages(nd2gpu.__path__, "nd2gpu.", onerror=walk_error)
        if not m.name.endswith(".__main__")  # runs the command: checked below
    ]
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        file = os.path.realpath(module.__file__ or "")
        assert file.startswith(site + os.sep), f"{name} from {file}"
    assert not failed, failed
    assert "nd2gpu.kernels._expand_cuda" in modules and "nd2gpu._objects" in modules
    print(f"{len(modules)} modules import from {site}")

    with sample_path() as path, nd2.ND2File(path) as ref, nd2gpu.ND2File(path) as f:
        expected = np.asarray(ref.binary_data)
        got = np.asarray(f.binary_data)
        assert type(got) is np.ndarray and got.dtype == expected.dtype
        assert got.shape == expected.shape == (2, 3, 2, 64, 64), got.shape
        assert np.array_equal(got, expected) and got.any()
    print(f"the sample decodes as nd2 decodes it: {got.shape} {got.dtype}")

    command = shutil.which("nd2gpu")
    assert command is not None, "no nd2gpu command on PATH"
    for argv in ([command, "info", "--sample"], [sys.executable, "-m", "nd2gpu"]):
        extra = ["--version"] if argv[-1] == "nd2gpu" else []
        done = subprocess.run(argv + extra, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (argv, done.stderr)
        print(f"$ {' '.join(argv[-2:] + extra)}: {done.stdout.splitlines()[0]}")


if __name__ == "__main__":
    main()
