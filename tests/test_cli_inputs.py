"""The commands read whatever the library reads: paths, ``file://`` URLs and fsspec
URLs (here over a loopback HTTP server), with ``--storage-option KEY=VALUE``;
errors name the URL, and the output checks keep working for every kind.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
import zarr
from cli_support import nd2_masks, run, sha256
from http_server import Files, closed_port, serving

from nd2gpu.cli import build_parser
from nd2gpu.cli.common import DEFAULT_DEVICE, parse_input, storage_option

HEADER = "X-Nd2gpu-Cli"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Files]]:
    with serving() as (base, files):
        yield base, files


@pytest.fixture
def served(make_nd2, server):
    """An ND2 file, its URL on the loopback server, and the server's files."""
    path, _ = make_nd2(loops=(("T", 2), ("Z", 2)), frame_shape=(24, 32))
    base, files = server
    files.content["/cells.nd2"] = path.read_bytes()
    files.failures.clear()
    files.reset()
    return path, base + "/cells.nd2", files


def test_storage_option_values_are_json_or_text():
    assert storage_option("anon=true") == ("anon", True)
    assert storage_option("block_size=123") == ("block_size", 123)
    assert storage_option("token=null") == ("token", None)
    assert storage_option("profile=lab") == ("profile", "lab")
    assert storage_option("endpoint_url=http://h:9000") == (
        "endpoint_url",
        "http://h:9000",
    )
    assert storage_option('headers={"A": "b=c"}') == ("headers", {"A": "b=c"})
    assert storage_option("empty=") == ("empty", "")
    for bad in ("anon", "=true", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            storage_option(bad)


def test_inputs_are_paths_or_urls(tmp_path):
    path = tmp_path / "a b.nd2"
    assert parse_input(str(path)) == path
    assert parse_input(path.as_uri()) == path  # file:// is the local path
    assert parse_input("http://h/x.nd2") == "http://h/x.nd2"
    assert parse_input("s3://bucket/key.nd2") == "s3://bucket/key.nd2"


def test_info_of_a_url_with_storage_options(served, capsys):
    path, url, files = served
    code, out, err = run(
        capsys,
        *("info", url, "--json", "--objects"),
        *("--storage-option", f'headers={{"{HEADER}": "token-7"}}'),
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["file"] == url and info["size_bytes"] == path.stat().st_size
    assert [layer["name"] for layer in info["layers"]] == ["cells", "nuclei"]
    assert files.gets()
    assert all(r.headers.get(HEADER) == "token-7" for r in files.requests)


def test_objects_of_a_url_equal_those_of_the_path(served, tmp_path, capsys):
    path, url, _ = served
    code, local, err = run(capsys, "objects", path)
    assert code == 0, err
    code, remote, err = run(capsys, "objects", url)
    assert code == 0, err
    assert remote == local and len(list(csv.reader(io.StringIO(remote)))) > 1
    # The output checks see no local input in a URL: any local name is fine.
    table = tmp_path / "cells.csv"
    code, _, err = run(capsys, "objects", url, "-o", table)
    assert code == 0, err
    assert table.read_text() == local


def test_any_fsspec_url(served, capsys):
    """Not only HTTP: any file system fsspec knows (here its in-memory one)."""
    import fsspec

    path, _, _ = served
    fs = fsspec.filesystem("memory")
    fs.pipe("/nd2gpu-cli/cells.nd2", path.read_bytes())
    try:
        code, local, err = run(capsys, "objects", path)
        assert code == 0, err
        code, remote, err = run(capsys, "objects", "memory://nd2gpu-cli/cells.nd2")
        assert code == 0, err
        assert remote == local
    finally:
        fs.rm("/nd2gpu-cli/cells.nd2")


def test_export_of_a_url(served, tmp_path, capsys):
    pytest.importorskip("yaozarrs")
    path, url, _ = served
    out = tmp_path / "cells.zarr"
    code, _, err = run(capsys, "export", url, out, "--labels-only", "-q")
    assert code == 0, err
    root = zarr.open_group(out, mode="r")
    names = root.attrs["ome"]["labels"]
    expected = nd2_masks(path)
    assert [name.split("_", 2)[2] for name in names] == list(expected)
    for name, mask in zip(names, expected.values(), strict=True):
        np.testing.assert_array_equal(root[name]["0"][...], mask)


def test_bench_of_a_url(served, capsys):
    _, url, _ = served
    code, out, err = run(capsys, "bench", url, "--repeats", 1, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["file"] == url and result["values_agree"] is True


def test_file_urls_keep_the_output_checks(make_nd2, tmp_path, capsys):
    """A file:// input is the local file it names: outputs that are it, through a
    symbolic or a hard link, are refused as for its path."""
    path, _ = make_nd2()
    before = sha256(path)
    url = path.as_uri()
    code, out, err = run(capsys, "info", url, "--json")
    assert code == 0, err
    assert json.loads(out)["size_bytes"] == path.stat().st_size
    (tmp_path / "link.ome.tif").symlink_to(path)
    (tmp_path / "hard.ome.tif").hardlink_to(path)
    (tmp_path / "link.csv").symlink_to(path)
    for argv in (
        ("export", url, tmp_path / "link.ome.tif"),
        ("export", url, tmp_path / "hard.ome.tif"),
        ("objects", url, "-o", tmp_path / "link.csv"),
    ):
        code, _, err = run(capsys, *argv, "--overwrite")
        assert code == 2 and "over the input file" in err, (argv, err)
    assert sha256(path) == before


@pytest.mark.parametrize("command", ["info", "objects", "bench", "export"])
def test_url_errors_name_the_url(command, server, tmp_path, capsys):
    base, _ = server
    missing = base + "/missing.nd2"
    refused = f"http://127.0.0.1:{closed_port()}/cells.nd2"
    for url, why in ((missing, "404"), (refused, "refused")):
        extra = [tmp_path / "out.zarr"] if command == "export" else []
        code, out, err = run(capsys, command, url, *extra)
        assert code == 1, err
        assert err.startswith("nd2gpu: error: ") and err.count("\n") == 1, err
        assert url in err and "Traceback" not in err and out == ""
        assert why in err.lower(), err  # and why it failed
    assert not (tmp_path / "out.zarr").exists()


def test_storage_options_need_a_url(make_nd2, capsys):
    path, _ = make_nd2()
    code, _, err = run(capsys, "info", path, "--storage-option", "anon=true")
    assert code == 2 and "--storage-option applies to URLs" in err
    code, _, err = run(capsys, "info", path, "--storage-option", "anon")
    assert code == 2 and "KEY=VALUE" in err


def test_every_command_takes_urls_and_one_default_device():
    """Every command reading a file takes --storage-option, and every --device
    defaults to the library's default (the CPU)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("info", "export", "objects", "bench"):
        options = {o: a for a in sub.choices[name]._actions for o in a.option_strings}
        assert "--storage-option" in options, name
        if name != "bench":  # bench's --device names the readers to time
            assert options["--device"].default == DEFAULT_DEVICE == "cpu", name
