"""What users of the installed package see: its namespace and its types.

These run against whichever nd2gpu is imported: the editable install of the
README's developer set-up, or the package installed as users install it, which
.ci/run tests from a fresh environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

import nd2gpu

#: The subpackages whose names may be seen on ``nd2gpu`` once imported.
PUBLIC_SUBMODULES = {"cli", "kernels"}

USER_SCRIPT = textwrap.dedent(
    """
    import nd2gpu

    with nd2gpu.ND2File("cells.nd2") as f:
        reveal_type(f.binary_data)
        layers = f.binary_data
        if layers is not None:
            reveal_type(layers[0].decode([0, 1]))
    reveal_type(nd2gpu.write_nd2)
    nd2gpu.not_a_name
    """
)


def test_the_namespace_is_the_public_api():
    """A fresh ``import nd2gpu`` holds ``__all__`` and subpackages, nothing else
    public (no helpers it imported for itself)."""
    names = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, nd2gpu, types; print(json.dumps({n: isinstance(v, "
                "types.ModuleType) for n, v in vars(nd2gpu).items() "
                "if not n.startswith('_')}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # nd2_to_tiff is looked up on use (it needs tifffile, as in nd2).
    exported = set(nd2gpu.__all__) - {"__version__", "nd2_to_tiff"}
    assert exported <= set(names)
    others = set(names) - exported
    assert others <= PUBLIC_SUBMODULES, others
    assert all(names[n] for n in others)  # subpackages, imported by nd2gpu


def test_every_name_of_all_resolves():
    for name in nd2gpu.__all__:
        assert getattr(nd2gpu, name) is not None, name
    assert isinstance(nd2gpu.__version__, str) and nd2gpu.__version__ != "unknown"
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        nd2gpu.not_a_name  # noqa: B018


def test_public_submodules_are_modules():
    import nd2gpu.cli

    for name in PUBLIC_SUBMODULES:
        assert isinstance(getattr(nd2gpu, name), ModuleType)


@pytest.mark.slow
def test_mypy_sees_the_types_of_the_installed_package(tmp_path):
    """py.typed reaches users: mypy, run on a user's script outside the source
    tree, finds the package (editable or installed) and its annotations."""
    pytest.importorskip("mypy")
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "user.py"),
            *("--cache-dir", str(tmp_path / "cache"), "--no-error-summary"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert "Cannot find implementation or library stub" not in out, out
    assert 'Revealed type is "nd2gpu._layers.BinaryLayers | None"' in out, out
    assert 'Revealed type is "numpy.ndarray[' in out, out  # decode(): NumPy | device
    assert 'Revealed type is "def (path: ' in out, out  # write_nd2's signature
    assert 'Module has no attribute "not_a_name"' in out, out
    assert done.returncode == 1  # that one error, and no other
    assert out.count("error:") == 1, out
