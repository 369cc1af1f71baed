"""Count what a call really decodes, for tests of laziness and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from nd2gpu._backends import cpu as _cpu
from nd2gpu._decode import front as _front


class CountingInflate:
    """Counts the frames whose whole stream is inflated (anything decoded)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = _front.inflate_group

        def counting(payloads: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls += sum(p is not None for p in payloads)
            return original(payloads, *args, **kwargs)

        monkeypatch.setattr(_front, "inflate_group", counting)
        monkeypatch.setattr(_cpu, "inflate_group", counting)
