"""The ``nd2gpu`` command: parser, conventions, exit statuses, one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from cli_support import run
from nd2_surgery import rewrite

import nd2gpu
from nd2gpu import cli
from nd2gpu.cli import sample_path


def test_sample_matches_make_sample(tmp_path):
    """The shipped sample is what tools/make_sample.py writes, byte for byte."""
    import make_sample

    with sample_path() as sample:
        make_sample.main([str(tmp_path / "again.nd2")])
        assert (tmp_path / "again.nd2").read_bytes() == sample.read_bytes()
        assert sample.stat().st_size < 200_000


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip().startswith(f"nd2gpu {nd2gpu.__version__} (nd2 ")


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_anywhere(tmp_path, capsys, where):
    missing = tmp_path / "missing.nd2"
    argv = ["--traceback", "info", missing]
    if where == "after":
        argv = ["info", missing, "--traceback"]
    with pytest.raises(FileNotFoundError):
        cli.main([str(a) for a in argv])
    code, _, err = run(capsys, "info", missing)
    assert code == 1 and err.count("\n") == 1


def test_commands_register_themselves(capsys, monkeypatch):
    """A command is one module with ``add_parser`` and one entry in COMMANDS."""

    def add_parser(subparsers):
        p = subparsers.add_parser("count", help="count to n")
        p.add_argument("n", type=int)
        p.set_defaults(func=lambda args: print("count", args.n) or 0)
        return p

    module = types.ModuleType("count")
    module.add_parser = add_parser
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, module))
    code, out, err = run(capsys, "count", "3")
    assert code == 0 and out == "count 3\n", err
    assert "count" in cli.build_parser().format_help()
    for command in ("info", "export", "bench", "objects"):
        assert command in cli.build_parser().format_help()


def test_every_command_takes_traceback_and_help(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        options = {o for a in command._actions for o in a.option_strings}
        assert {"--traceback", "--help"} <= options, name
        assert run(capsys, name, "--help")[0] == 0


def _no_layers(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),))
    return rewrite(
        path,
        tmp_path / "plain.nd2",
        lambda name, data: None if name.startswith(b"CustomData") else data,
    )


def _text(make_nd2, tmp_path):
    path = tmp_path / "notes.nd2"
    path.write_text("not an ND2 file\n")
    return path


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda m, t: t / "missing.nd2", "No such file or directory"),
        (_text, "not recognized as ND2"),
        (lambda m, t: t / "sub", "is a directory"),
        (_no_layers, "has no binary layers"),
    ],
    ids=["missing", "text", "directory", "no-layers"],
)
@pytest.mark.parametrize(
    "command",
    [["info"], ["export", "{out}"], ["bench", "--repeats", "1"]],
    ids=["info", "export", "bench"],
)
def test_errors_are_one_line(make_nd2, tmp_path, capsys, make_input, message, command):
    (tmp_path / "sub").mkdir()
    path = make_input(make_nd2, tmp_path)
    argv = [command[0], str(path)] + [
        a.format(out=tmp_path / "out.zarr") for a in command[1:]
    ]
    code, out, err = run(capsys, *argv)
    if command == ["info"] and message == "has no binary layers":
        assert code == 0 and "0 binary layers" in out and err == ""
        return
    assert code == 1
    assert err.startswith("nd2gpu: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    ("argv", "advice"),
    [
        (["export", "{file}", "{file}", "--format", "zarr"], ".zarr or .ome.tif"),
        (["export", "{file}", "{dir}/o.nd2", "--format", "tiff"], ".zarr or .ome.tif"),
        (["objects", "{file}", "-o", "{file}"], ".csv or .parquet"),
        (["objects", "{file}", "-o", "{dir}/other.ND2"], ".csv or .parquet"),
    ],
)
def test_refused_nd2_outputs_advise_the_command_s_outputs(
    make_nd2, tmp_path, capsys, argv, advice
):
    path, _ = make_nd2()
    args = [a.format(file=path, dir=tmp_path) for a in argv]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert f"(choose an output ending in {advice})" in err, err


def test_bench_json_has_no_note_for_large_frames(tmp_path, capsys):
    labels = {"a": np.ones((1, 512, 512), np.uint16)}
    path = nd2gpu.write_nd2(tmp_path / "large.nd2", labels, loops=[("T", 1)])
    argv = ("bench", path, "--no-nd2", "--device", "cpu", "--repeats", 1, "--json")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["note"] is None


def test_usage_errors(capsys):
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "--help")[0] == 0
    code, _, err = run(capsys, "info", "--batch-frames", "0")
    assert code == 2 and "--batch-frames" in err
    assert run(capsys, "bench", "--repeats", "-1")[0] == 2
    code, _, err = run(capsys, "bench", "a.nd2", "--sample")
    assert code == 2 and err.count("\n") == 1


@pytest.mark.slow
def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "nd2gpu", "info"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[0] cells" in result.stdout and "[1] nuclei" in result.stdout


@pytest.mark.slow
def test_closed_pipe_ends_quietly():
    """``nd2gpu info | head -1``: no error line when the reader goes away."""
    proc = subprocess.run(
        f"{sys.executable} -m nd2gpu info --sample | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout.startswith("file:")
    assert "error" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_progress_not_written_to_logs(tmp_path):
    """stderr a file, not a terminal: no progress bar, no carriage return."""
    log = tmp_path / "log.txt"
    with log.open("w") as fh:
        result = subprocess.run(
            [sys.executable, "-m", "nd2gpu", "export", "--sample", tmp_path / "o.zarr"],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0
    assert log.read_text() == ""
    assert result.stdout.startswith("wrote ") and result.stdout.count("\n") == 1
