"""How long ``python -m van_ablate.analysis.report all`` takes on 100 runs and a 200-trial study.

Makes the inputs with the report tests' fixtures (``tests/report_inputs.py``: every Table 3,
kernel-size and LayerScale ablation over seeds, and a two-objective study), then times the report
command as a user runs it, in a fresh process, import time included. From the repository root::

    .venv/bin/python scripts/report_benchmark.py --runs 100 --trials 200
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from van_ablate.paper import ABLATIONS

# The inputs are the report tests' fixtures, which live with the tests (they are not shipped).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from report_inputs import make_results, make_study, write_run  # noqa: E402


def fabricate(root: Path, n_runs: int, n_trials: int, seed: int = 0) -> tuple[Path, str]:
    """``n_runs`` run directories under ``root/runs`` and an ``n_trials`` study in SQLite."""
    rng = random.Random(seed)
    ablations = sorted(ABLATIONS)
    for i in range(n_runs):
        ablation = ablations[i % len(ablations)]
        top1 = 60 + rng.gauss(0, 2)
        write_run(
            root / "runs", make_results(f"{ablation}-s{i}", ablation=ablation, seed=i, top1=top1)
        )
    trials = [
        make_results(f"trial{i}", ablation=rng.choice(ablations), seed=i, top1=55 + rng.gauss(0, 4))
        for i in range(n_trials)
    ]
    storage = f"sqlite:///{root / 'study.db'}"
    make_study(storage, "bench", trials)
    return root / "runs", storage


def time_report(runs: Path, storage: str, out: Path) -> float:
    """Seconds of wall time for the report command in a fresh Python process."""
    cmd = [sys.executable, "-m", "van_ablate.analysis.report", "all", str(runs),
           "--storage", storage, "--study", "bench", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def time_import() -> float:
    """Seconds a fresh process needs just to import the report command (torch, timm, optuna)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import van_ablate.analysis.report"], check=True)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    """Fabricate, time the report (median of ``--repeats``), print the figures."""
    p = argparse.ArgumentParser(prog="scripts/report_benchmark.py", description=__doc__)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs, storage = fabricate(Path(tmp), args.runs, args.trials)
        times = sorted(time_report(runs, storage, Path(tmp) / "out") for _ in range(args.repeats))
        imports = sorted(time_import() for _ in range(args.repeats))
        files = sum(1 for f in (Path(tmp) / "out").rglob("*") if f.is_file())
    median, imp = times[len(times) // 2], imports[len(imports) // 2]
    print(
        f"report all: {args.runs} runs + {args.trials}-trial study -> {files} files in "
        f"{median:.1f} s (median of {args.repeats}; {imp:.1f} s of it importing torch/timm/optuna)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
