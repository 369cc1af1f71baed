"""The layout of a staged batch of runs: what the decode threads write into pinned
memory and the GPU expansion kernel reads (one home for both sides).

A batch is one buffer: the frame table, then the entries.

- frame table, ``int64[max_frames, FRAME_FIELDS]``: per frame its first entry
  (``F_RUN_LO``), its entries (``F_RUNS``), the pixels they paint
  (``F_PIXELS``), the flat offset of its slot in the output block (``F_BASE``)
  and its first tile (``F_TILE_LO``, numbered across the batch; set when the
  batch is closed);
- entries, ``uint32[capacity, ENTRY_FIELDS]``: per run its frame-local offset
  (``row * ncols + col``), the frame-local exclusive prefix sum of the lengths
  before it (frames have fewer than 2**31 pixels), and its value: 12 bytes a
  run.
"""

from __future__ import annotations

from typing import Final

F_RUN_LO: Final = 0
F_RUNS: Final = 1
F_PIXELS: Final = 2
F_BASE: Final = 3
F_TILE_LO: Final = 4
FRAME_FIELDS: Final = 5
FRAME_BYTES: Final = 8 * FRAME_FIELDS

E_OFFSET: Final = 0
E_PREFIX: Final = 1
E_VALUE: Final = 2
ENTRY_FIELDS: Final = 3
ENTRY_BYTES: Final = 4 * ENTRY_FIELDS
