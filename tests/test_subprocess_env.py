"""Subprocesses started by the tests, benchmarks and kernel tools keep the
parent's environment.

On the GPU machine the dependencies live on PYTHONPATH; a child given a
hand-made ``env={...}`` loses it and fails to import them. So every ``env=``
argument, and every dict bound to a name ``env``, must start from
``os.environ`` (``{**os.environ, ...}``, ``dict(os.environ)`` or
``os.environ.copy()``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_architecture import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (
    *(ROOT / folder for folder in ("tests", "benchmarks", "tools")),
    *PACKAGES.values(),
)


def _from_environ(node: ast.AST) -> bool:
    """Whether an expression builds on ``os.environ``."""
    return any(
        isinstance(n, ast.Attribute)
        and n.attr == "environ"
        and isinstance(n.value, ast.Name)
        and n.value.id == "os"
        for n in ast.walk(node)
    )


def hand_made_envs(source: str) -> list[int]:
    """Lines where an environment for a child process drops ``os.environ``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        values = []
        if isinstance(node, ast.Call):
            values += [k.value for k in node.keywords if k.arg == "env"]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "env" for t in node.targets
        ):
            values.append(node.value)
        for value in values:
            if isinstance(value, (ast.Dict, ast.Call)) and not _from_environ(value):
                lines.append(value.lineno)
    return sorted(lines)


def test_the_check_finds_hand_made_environments():
    bad = (
        "subprocess.run(cmd, env={'PATH': '/bin'})\n"
        "env = dict(PATH='/bin')\n"
        "subprocess.run(cmd, env={**os.environ, 'A': '1'})\n"
        "env = os.environ.copy()\n"
        "env = dict(os.environ)\n"
        "subprocess.run(cmd, env=env)\n"
    )
    assert hand_made_envs(bad) == [1, 2]


def test_subprocesses_keep_the_parent_environment():
    offenders = {
        str(path): lines
        for folder in FOLDERS
        for path in sorted(folder.rglob("*.py"))
        if (lines := hand_made_envs(path.read_text()))
    }
    assert offenders == {}
