"""Ctrl-C and SIGTERM while a command runs: stop cleanly, one line, a known status.

The first SIGINT or SIGTERM raises KeyboardInterrupt in the command (the writers
under it remove what they staged, see ``nd2gpu._write.atomic``); any later one
is ignored, so that cleanup is never cut short. Once the command's output has
been put in place, signals are ignored too: the command is complete, and it
ends as a success. The command line reports an interrupt as one line on stderr
and exits with 130 (SIGINT) or 143 (SIGTERM), as shells report them.

Python runs a handler wherever the main thread is, also inside a finalizer or a
weakref callback, where an exception cannot propagate: Python prints "Exception
ignored in ..." and goes on. Such a KeyboardInterrupt is caught by the run's
``sys.unraisablehook`` instead, and raised again a moment later, in the code the
command runs.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from .._write.atomic import recorded_commits
from .._write.interrupts import INTERRUPTS

#: Exit status and message of a command stopped by each signal.
EXIT_STATUS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
MESSAGE: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
#: Seconds before a KeyboardInterrupt that a finalizer swallowed is raised again.
RETRY_S = 0.01


class Interrupts:
    """What a command run has received, and whether it may still be stopped."""

    def __init__(self, commits: list[Path]) -> None:
        self.signum: int | None = None
        self.finished = False
        self.delivered = False  # the KeyboardInterrupt reached the command line
        self._commits = commits
        self._retry = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: stop the command the first time, if it can be."""
        if self.finished or self._commits:
            return
        if self.signum is not None and not self._retry:
            return
        self.signum = self.signum or signum
        self._retry = False
        raise KeyboardInterrupt

    def unraisable(self, hook: Any, unraisable: Any) -> None:
        """``sys.unraisablehook``: a swallowed interrupt is raised again soon."""
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and not (
            self.delivered or self.finished or self.signum is None
        ):
            self._retry = True
            threading.Timer(RETRY_S, self._raise_again).start()
            return
        hook(unraisable)

    def _raise_again(self) -> None:
        if self._retry and not (self.delivered or self.finished):
            _thread.interrupt_main(signal.Signals(self.signum or signal.SIGINT))

    @property
    def status(self) -> int:
        """The exit status of the stopped command (SIGINT when no signal came)."""
        return EXIT_STATUS.get(self.signum or signal.SIGINT, 130)

    @property
    def message(self) -> str:
        """The word for what stopped the command."""
        return MESSAGE.get(self.signum or signal.SIGINT, "interrupted")


@contextlib.contextmanager
def handled_interrupts(*, restore: bool = True) -> Iterator[Interrupts]:
    """Handle SIGINT and SIGTERM with an `Interrupts` while the block runs.

    Parameters
    ----------
    restore : bool
        Put the previous handlers back at the end. False for the program
        itself, about to exit: the handlers of the block then ignore every
        signal.
    """
    with recorded_commits() as commits:
        state = Interrupts(commits)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in INTERRUPTS:
                if signal.getsignal(signum) is not None:  # None: set outside Python
                    previous[signum] = signal.signal(signum, state.handle)
        hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: state.unraisable(hook, unraisable)
        try:
            yield state
        finally:
            state.finished = True
            sys.unraisablehook = hook
            if restore:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)


def ignore_interrupts() -> None:
    """Ignore SIGINT and SIGTERM from now on (in the main thread)."""
    if threading.current_thread() is threading.main_thread():
        for signum in INTERRUPTS:
            signal.signal(signum, signal.SIG_IGN)


__all__ = ["EXIT_STATUS", "Interrupts", "handled_interrupts", "ignore_interrupts"]
