"""Stop on SLURM's preemption signals at the next step, after a checkpoint, ready for requeue.

SLURM sends SIGTERM to a job it preempts or requeues (then SIGKILL once its grace time is
over); submitit asks for SIGUSR2 ahead of a time limit (``--signal=USR2@90``) and requeues the
job in its own handler. While training, :class:`StopSignals` only notes the signal; the loop
asks :meth:`StopSignals.agreed` after each optimizer step, writes a mid-epoch checkpoint and
calls :meth:`StopSignals.hand_over`, which gives the signal to the handler that was there before
(submitit's requeues the job) and raises :class:`van_ablate.errors.Preempted`::

    with StopSignals() as stop:
        for step in steps:
            ...
            if stop.agreed(dist, device):
                save_checkpoint()
                stop.hand_over()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

from van_ablate.errors import Preempted
from van_ablate.train import distributed
from van_ablate.train.distributed import DistEnv

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopSignals:
    """Records the first of :data:`SIGNALS` while active (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.handed_over = False  # set once the previous handler has been given the signal
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

    def agreed(self, dist: DistEnv, device: torch.device) -> bool:
        """Whether any rank got a stop signal (a collective: every rank stops at the same step)."""
        if dist.world_size == 1:
            return self.signum is not None
        flag = torch.tensor([float(self.signum is not None)], device=device)
        stopping = distributed.sum_(flag, dist).item() > 0
        if stopping and self.signum is None:
            self.signum = signal.SIGTERM  # another rank's signal: stop alike
        return stopping

    def hand_over(self) -> None:
        """Restore the previous handlers, run the one for the received signal, raise Preempted.

        The previous handler may end the process itself: submitit's requeues the job and raises
        ``SystemExit``, which must reach submitit (so it writes no result for the job).
        """
        assert self.signum is not None, "hand_over() is for after a stop signal"
        previous: Callable[[int, FrameType | None], Any] | Any = self._previous.get(self.signum)
        self._restore()
        self.handed_over = True
        if callable(previous):
            previous(self.signum, None)
        raise Preempted(self.signum)
