"""A call's payloads: views of the memory map, and the raw DEFLATE streams a GPU
inflater would take (docs/architecture.md, "GPU inflate")."""

from __future__ import annotations

import zlib

import numpy as np

import nd2gpu
from nd2gpu._decode.payloads import CallPayloads
from nd2gpu._decode.plan import DecodePlan


def test_raw_deflate_streams_inflate_to_the_payloads_and_their_adler32(make_nd2):
    path, labels = make_nd2(loops=(("T", 4), ("Z", 2)), layers=("a",))
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        plan = DecodePlan.of([layer.ref], 0, np.arange(8))
        with layer.source.reading() as index:
            payloads = CallPayloads(plan, index)
            views, errors = payloads.views(0, 8)
            raw = payloads.raw_deflate(0, 8)
    assert errors is None
    for view, item, frame in zip(
        views, raw, labels["a"].reshape(8, 13, 17), strict=True
    ):
        if view is None:
            assert item is None and not frame.any()
            continue
        stream, adler = item
        assert bytes(view[:2]) == b"\x78\x9c"  # zlib, no preset dictionary
        inflated = zlib.decompress(bytes(stream), wbits=-15)
        assert inflated == zlib.decompress(view)
        assert zlib.adler32(inflated) == adler


def test_local_payloads_are_views_of_the_map(make_nd2):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a",))
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        plan = DecodePlan.of([layer.ref], 0, [2, 0, 2])
        with layer.source.reading() as index:
            views, _ = CallPayloads(plan, index).views(0, 3)
            whole = index.source.buffer()
    present = [v for v in views if v is not None]
    assert present and all(np.shares_memory(v, whole) for v in present)
