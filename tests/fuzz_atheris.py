"""Coverage-guided fuzzing of nd2gpu against nd2 with atheris, for long runs.

Not part of CI (atheris is not a test dependency): it runs the oracles of
tests/test_fuzz.py (tests/fuzz_*_oracle.py) on inputs that atheris (libFuzzer)
mutates and evolves, for as long as you let it::

    pip install atheris
    python tests/fuzz_atheris.py -atheris_runs=1000000
    python tests/fuzz_atheris.py -max_total_time=600 -print_final_stats=1 \
        -use_value_profile=1
    python tests/fuzz_atheris.py corpus/ -atheris_runs=1000000   # keep a corpus
    ND2GPU_FUZZ_MODES=words,file python tests/fuzz_atheris.py ...   # some modes

Any disagreement with nd2 (``OracleError``), or an exception nd2gpu must not
raise, stops the run: atheris prints the traceback and saves the input as
``crash-<sha1>``. Replay one with ``python tests/fuzz_atheris.py crash-<sha1>``.

The first input byte picks a mode (among those in ``ND2GPU_FUZZ_MODES``):

``stream``
    A stream built record by record from the input: frame shape, masks, rows
    and runs of small numbers with the odd wild word, sometimes damaged; it is
    zlib-compressed and decoded. Reaches the parser's every branch.
``words``
    The rest is an inflated word stream as is (header, masks, rows, runs).
``payload``
    The rest is the payload as is (zlib header, deflate data, adler32).
``edit``
    A valid payload (hand-built streams and encoded label images) with edits
    the input chooses: bit flips, wild words, insertions, deletions, cuts.
``file``
    A small ND2 file written by write_nd2, damaged by the mutations of
    ``fuzz_mutations.FILE_MUTATIONS`` (map entries, chunk lengths, flips, cuts),
    then opened with nd2 and nd2gpu and compared frame by frame.

Each process writes its files to a private temporary directory. Run several
processes (one per core) for more cases per second; each prints libFuzzer's
usual statistics, and ``-print_final_stats=1`` the number of runs at the end.
libFuzzer's own bookkeeping grows over millions of runs: pass
``-rss_limit_mb=4096`` if it stops at its default 2 GB limit.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))

# Coverage feedback: nd2gpu's Python code, but not its numba kernels (numba
# cannot compile instrumented functions; atheris excludes exact module names
# only, hence the list). The kernels' branches are mirrored by nd2 (its reference
# decoder and chunk reader are pure Python and walk the same records) and by the
# oracle's own stream walker, all instrumented: new paths through a stream show
# up as new coverage.
KERNELS = ["nd2gpu.kernels"] + [
    f"nd2gpu.kernels.{p.stem}"
    for p in (Path(__file__).parents[1] / "kernels").glob("*.py")
]
with atheris.instrument_imports(
    include=["nd2gpu", "nd2", "fuzz_payload_oracle", "fuzz_file_oracle"],
    exclude=KERNELS,
):
    import fuzz_file_oracle  # noqa: F401 - imports nd2 and nd2gpu, instrumented
    import fuzz_payload_oracle  # noqa: F401

import numpy as np  # noqa: E402
from fuzz_file_oracle import check_file  # noqa: E402
from fuzz_mutations import (  # noqa: E402
    base_files,
    delete_bytes,
    flip_bits,
    insert_bytes,
    mutate_file,
    set_words,
)
from fuzz_payload_oracle import WILD_WORDS, check_payload  # noqa: E402
from streams import stream_words  # noqa: E402

from nd2gpu._format.mask_encode import encode_label_frame  # noqa: E402

MODES = ("stream", "words", "payload", "edit", "file")
ACTIVE = [m for m in os.environ.get("ND2GPU_FUZZ_MODES", ",".join(MODES)).split(",")]
if unknown := set(ACTIVE) - set(MODES):
    raise SystemExit(f"unknown ND2GPU_FUZZ_MODES {sorted(unknown)}; use {MODES}")

WORKDIR = Path(tempfile.mkdtemp(prefix="nd2gpu-atheris-"))
BASE_FILES = sorted(base_files(WORKDIR).items())
CASE = WORKDIR / "case.nd2"
SEED_STREAMS = [
    stream_words(4, 5, [(1, [(0, [(0, 2), (3, 9)]), (3, [(1, 1)])])]).tobytes(),
    stream_words(3, 3, [(0xFFFF, [(2, [(0, 3)])]), (2, [(0, [(1, 1)])])]).tobytes(),
    stream_words(0, 7, []).tobytes(),
    encode_label_frame(np.arange(30, dtype=np.uint16).reshape(5, 6) % 4),
    encode_label_frame(np.eye(7, dtype=np.uint16) * 65535),
]


def edit_payload(fdp: atheris.FuzzedDataProvider) -> bytes:
    words = SEED_STREAMS[fdp.ConsumeIntInRange(0, len(SEED_STREAMS) - 1)]
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        kind = fdp.ConsumeIntInRange(0, 4)
        if kind == 0:
            flips = [(fdp.ConsumeInt(2), fdp.ConsumeIntInRange(0, 7))]
            words = flip_bits(words, flips)
        elif kind == 1:
            value = (
                WILD_WORDS[fdp.ConsumeIntInRange(0, len(WILD_WORDS) - 1)]
                if fdp.ConsumeBool()
                else fdp.ConsumeInt(4)
            )
            words = set_words(words, [(fdp.ConsumeIntInRange(0, 255), value)])
        elif kind == 2:
            words = insert_bytes(words, fdp.ConsumeInt(2), fdp.ConsumeBytes(8) or b"\0")
        elif kind == 3:
            words = delete_bytes(words, fdp.ConsumeInt(2), fdp.ConsumeIntInRange(1, 8))
        else:
            words = words[: fdp.ConsumeIntInRange(0, len(words))]
    data = zlib.compress(words, fdp.ConsumeIntInRange(0, 9))
    if fdp.ConsumeBool():  # damage the compressed stream too
        data = flip_bits(data, [(fdp.ConsumeInt(2), fdp.ConsumeIntInRange(0, 7))])
    return data


def small_or_wild(fdp: atheris.FuzzedDataProvider, top: int) -> int:
    """Mostly a small number (0..top), sometimes a wild 32-bit word."""
    if fdp.ConsumeIntInRange(0, 15):
        return fdp.ConsumeIntInRange(0, top) & 0xFFFFFFFF
    if fdp.ConsumeBool():
        return WILD_WORDS[fdp.ConsumeIntInRange(0, len(WILD_WORDS) - 1)]
    return fdp.ConsumeInt(4) & 0xFFFFFFFF


def structured_stream(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A stream built record by record from the input (like tests/streams.py)."""
    nrows, ncols = small_or_wild(fdp, 12), small_or_wild(fdp, 12)
    masks = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        rows = []
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            runs = [
                (small_or_wild(fdp, ncols + 3), small_or_wild(fdp, ncols + 3))
                for _ in range(fdp.ConsumeIntInRange(0, 4))
            ]
            rows.append((small_or_wild(fdp, nrows + 2), runs))
        masks.append((small_or_wild(fdp, 6), rows))
    words = stream_words(nrows, ncols, masks).tobytes()
    if fdp.ConsumeIntInRange(0, 3) == 0:  # then a little damage
        words = set_words(words, [(fdp.ConsumeInt(1), small_or_wild(fdp, 8))])
    if fdp.ConsumeIntInRange(0, 3) == 0:
        words = words[: fdp.ConsumeIntInRange(0, len(words))]
    return words


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = ACTIVE[fdp.ConsumeIntInRange(0, len(ACTIVE) - 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "stream":
            check_payload(zlib.compress(structured_stream(fdp)))
        elif mode == "words":
            check_payload(zlib.compress(fdp.ConsumeBytes(fdp.remaining_bytes())))
        elif mode == "payload":
            check_payload(fdp.ConsumeBytes(fdp.remaining_bytes()))
        elif mode == "edit":
            check_payload(edit_payload(fdp))
        else:
            _, base = BASE_FILES[fdp.ConsumeIntInRange(0, len(BASE_FILES) - 1)]
            steps = [
                (fdp.ConsumeInt(1), fdp.ConsumeInt(3), fdp.ConsumeInt(3))
                for _ in range(fdp.ConsumeIntInRange(1, 3))
            ]
            CASE.write_bytes(mutate_file(base, steps))
            check_file(CASE)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
