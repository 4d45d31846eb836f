"""Errors a user can fix from the command line, and the exit codes the CLI maps them to."""

from __future__ import annotations

import signal

EXIT_CONFIG = 2  # bad input: unknown key, wrong value, missing data, unwritable directory
EXIT_DIVERGED = 3  # training stopped on a non-finite loss


class ConfigError(ValueError):
    """One-line message naming the key, the bad value and what is allowed.

    >>> raise ConfigError("train.batch_size", 0, "must be an integer >= 1")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: train.batch_size=0: must be an integer >= 1
    """

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")

    def __reduce__(self):  # a job on SLURM returns its error pickled (submitit)
        return type(self), (self.key, self.value, self.allowed)


class Diverged(RuntimeError):
    """Training hit a non-finite loss; results.json already says status 'diverged'."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(f"loss became non-finite at epoch {epoch}, step {step}")

    def __reduce__(self):
        return type(self), (self.epoch, self.step)


class Preempted(Exception):
    """A stop signal (SLURM preemption or requeue) ended training after a mid-epoch checkpoint.

    The exit code is the shell's for a process ended by that signal (128 + its number), so SLURM
    and job scripts see the job as ended by it; the next run of the same command resumes.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after writing a checkpoint; run again to resume")

    def __reduce__(self):
        return type(self), (self.signum,)
