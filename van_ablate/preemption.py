"""Stop on SLURM's preemption signals at the next step, after a checkpoint, ready for requeue.

SLURM sends SIGTERM to a job it preempts or requeues (then SIGKILL once its grace time is
over); submitit asks for SIGUSR2 ahead of a time limit (``--signal=USR2@90``) and requeues the
job in its own handler. While training, :class:`StopSignals` only notes the signal; the loop
checks :attr:`StopSignals.signum` after each optimizer step, writes a mid-epoch checkpoint and
calls :meth:`StopSignals.hand_over`, which gives the signal to the handler that was there before
(submitit's requeues the job) and raises :class:`van_ablate.errors.Preempted`::

    with StopSignals() as stop:
        for step in steps:
            ...
            if stop.signum is not None:
                save_checkpoint()
                stop.hand_over()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from van_ablate.errors import Preempted

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopSignals:
    """Records the first of :data:`SIGNALS` while active (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        # Signal handlers can only be set from the main thread (a sweep may run jobs in others).
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:  # whoever started us chose to ignore it
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def hand_over(self) -> None:
        """Restore the previous handlers, run the one for the received signal, raise Preempted."""
        assert self.signum is not None, "hand_over() is for after a stop signal"
        previous: Callable[[int, FrameType | None], Any] | Any = self._previous.get(self.signum)
        self._restore()
        if callable(previous):  # e.g. submitit's, which requeues the job and exits
            previous(self.signum, None)
        raise Preempted(self.signum)
