"""SIGTERM and SIGHUP handled as Ctrl-C: both command lines end with the same one-line message.

By default those signals end Python at once and without a word; a ``kill``, a closed terminal or a
job scheduler's time limit then looks like a crash. Raised as ``Interrupted`` (a KeyboardInterrupt)
in the main thread, they unwind like Ctrl-C does: files being replaced are left whole (their
temporary copies removed), locks are let go, and the command prints what is saved.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# The signals turned into Interrupted (those that exist on this platform).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal; ``exit_status`` is the shell's 128 + its number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_status = 128 + signum


def exit_status(e: KeyboardInterrupt, ctrl_c: int = 130) -> int:
    """The exit status of a command that ``e`` stopped (Ctrl-C: ``ctrl_c``)."""
    return e.exit_status if isinstance(e, Interrupted) else ctrl_c


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise ``Interrupted``; the handlers before are restored
    after it. A signal ignored on purpose (``nohup`` ignores SIGHUP) stays ignored. Only the main
    thread may set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {}
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            before[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
