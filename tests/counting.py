"""Count what a call really decodes, for tests of laziness and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from nd2gpu._decode import frame as _frame_decode


class CountingInflate:
    """Counts calls of the whole-stream inflate (anything actually decoded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = _frame_decode.inflate_payload

        def counting(*args: object, **kwargs: object) -> np.ndarray:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(_frame_decode, "inflate_payload", counting)
