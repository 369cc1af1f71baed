"""Interrupts (SIGINT, SIGTERM) during a write: cleanup and commits run to their end.

Python runs a signal handler in the main thread between two bytecodes, so
Ctrl-C can land anywhere, also inside the code that removes a half-written
output or renames a complete one into place. Two tools keep those steps whole:

- `deferred_interrupts`: SIGINT and SIGTERM arriving during the block are held
  and delivered, once each, when it ends (to whatever handlers were there);
- `sigterm_unwinds`: while a staged output exists, a SIGTERM that would kill the
  process outright (its default) unwinds the stack like Ctrl-C instead, so that
  the output is removed; the process then ends by SIGTERM, as it would have.

Signal handlers can only be changed in the main thread; elsewhere (where no
handler runs either) both are no-ops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: The signals that stop a write: Ctrl-C and a polite kill.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any] | int | None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver each once.

    The block is not interrupted midway: a signal that arrives during it is
    raised again with ``signal.raise_signal`` when it ends, so the handler in
    place before the block (Python's KeyboardInterrupt, a command's own, or the
    default action) acts on it then.
    """
    if not _in_main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous: dict[int, Handler] = {}
    try:
        for signum in map(int, INTERRUPTS):
            handler = signal.getsignal(signum)
            if handler is None:  # set outside Python: leave it alone
                continue
            previous[signum] = handler
            signal.signal(signum, hold)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


class _Terminated(BaseException):
    """SIGTERM arrived while an output was staged (see `sigterm_unwinds`)."""


def _unwind(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Let a default SIGTERM unwind the block, then end the process by SIGTERM.

    Only where SIGTERM has its default action (the process would die without
    running any cleanup); a handler someone installed is left as it is.
    """
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _unwind)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # ends the process
        raise  # pragma: no cover - not reached
    finally:
        if signal.getsignal(signal.SIGTERM) is _unwind:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ["INTERRUPTS", "deferred_interrupts", "sigterm_unwinds"]
