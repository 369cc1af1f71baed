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
HEADER_WORDS: Final = 7
HEADER_BYTES: Final = 4 * HEADER_WORDS
MASK_WORDS: Final = 9
#: Word of a mask record that holds its number of row records.
MASK_ROWS_WORD: Final = 6
ROW_WORDS: Final = 2
RUN_WORDS: Final = 2
#: Object ids are stored as uint32 but decoded into uint16 label images.
MAX_LABEL: Final = 0xFFFF
#: Bytes before the zlib stream in every mask chunk.
MASK_PREFIX_BYTES: Final = 4
