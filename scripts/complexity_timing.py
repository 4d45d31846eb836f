"""Wall and CPU time of the complexity command, as the README's "Params and FLOPs" quotes them.

Runs ``python -m van_ablate.complexity`` in a fresh process (import time included), once with
the default ``--count auto`` and once with ``--count all``, and prints each command's wall time
and the CPU time of the child process. From the repository root, on a quiet machine::

    .venv/bin/python scripts/complexity_timing.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

COMMANDS = (
    ["--count", "auto"],
    ["--count", "all"],
)


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one ``python -m van_ablate.complexity`` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "van_ablate.complexity", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    for args in COMMANDS:
        wall, cpu = timed(args)
        print(
            f"python -m van_ablate.complexity {' '.join(args)}: {wall:.0f} s wall, {cpu:.0f} s CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
