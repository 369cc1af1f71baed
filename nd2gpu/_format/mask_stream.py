"""Layout of one frame's binary-layer (mask) stream: the one home of its constants.

A mask chunk's data is ``MASK_PREFIX_BYTES`` bytes (meaning unknown; readers skip
them) and one zlib stream. Inflated, the stream is little-endian ``uint32`` words:

- the frame header, ``HEADER_WORDS`` words: version, ncols, nrows, nmasks, then
  three words a decoder does not need;
- per mask (object): ``MASK_WORDS`` words, the first the object's id and the
  seventh its number of row records;
- per row record: ``ROW_WORDS`` words, ``row, nruns``;
- per run: ``RUN_WORDS`` words, ``col, length``.

``docs/format.md`` gives the full layout and what decoding means.
"""

from __future__ import annotations

from typing import Final

#: First header word in every file seen; other values are decoded the same way
#: (with a warning, as the reference reader does).
STREAM_VERSION: Final = 3

#: The frame header's words (the last two: meaning unknown, written as 0).
HEADER_WORDS: Final = 7
HEADER_BYTES: Final = 4 * HEADER_WORDS
H_VERSION: Final = 0
H_NCOLS: Final = 1
H_NROWS: Final = 2
H_NMASKS: Final = 3
#: Looks like the byte count of what follows the header (a decoder ignores it).
H_BYTES_AFTER: Final = 4

#: A mask (object) record's words: its id, what looks like its bounding box,
#: what look like byte counts, and its number of row records (a decoder needs
#: only the id and the row count; word 8 is always 0).
MASK_WORDS: Final = 9
MASK_ID_WORD: Final = 0
MASK_COL0_WORD: Final = 1
MASK_ROW0_WORD: Final = 2
MASK_COL1_WORD: Final = 3
MASK_ROW1_WORD: Final = 4
MASK_BYTES_WORD: Final = 5
#: Word of a mask record that holds its number of row records.
MASK_ROWS_WORD: Final = 6
MASK_BYTES_LESS_16_WORD: Final = 7

#: A row record: ``row, nruns``.
ROW_WORDS: Final = 2
ROW_ROW_WORD: Final = 0
ROW_NRUNS_WORD: Final = 1
#: A run: ``col, length``.
RUN_WORDS: Final = 2
RUN_COL_WORD: Final = 0
RUN_LENGTH_WORD: Final = 1
#: Object ids are stored as uint32 but decoded into uint16 label images.
MAX_LABEL: Final = 0xFFFF
#: Bytes before the zlib stream in every mask chunk.
MASK_PREFIX_BYTES: Final = 4
