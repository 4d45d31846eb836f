"""The README's example report: the ready proxy studies on this machine, then ``report all``.

Runs (or resumes: a finished study is not run again) the sweeper's ``table3`` and
``kernel_size`` studies at ``scale=proxy`` (van_proxy on the built-in data, CPU, W&B off), the
``no_layer_scale`` preset over the same seeds at the same scale, and writes the report of all
those runs beside the paper's figures into ``docs/example_report`` (with the attention maps of
three presets in ``attention/``). From the repository root::

    .venv/bin/python scripts/example_report.py                # runs what is missing, then reports
    .venv/bin/python scripts/example_report.py --report-only  # report what the studies hold now
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from van_ablate.analysis import attention, report
from van_ablate.analysis.collect import load_runs

STUDIES = ("table3", "kernel_size")
MODEL = "van_proxy"
ATTENTION = ("baseline", "no_dwd_conv", "dense_conv")  # seed 0 of each, side by side
LAYER_SCALE_DIR = f"multirun/layer_scale_{MODEL}"
# The LayerScale table's "w/o" row: no study holds it, so a plain multirun at the same scale.
LAYER_SCALE = ("-m", "+scale=proxy", "+ablation=no_layer_scale", "seed=0,1,2", "logger=none",
               f"hydra.sweep.dir={LAYER_SCALE_DIR}")  # fmt: skip


def train(*overrides: str) -> None:
    """``python -m van_ablate OVERRIDES``; a started study or run resumes where it stopped."""
    # One thread per process: the jobs run one after another on a shared 2-core CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "van_ablate", *overrides], check=True, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the studies (unless ``--report-only``), then ``report all`` of their runs."""
    p = argparse.ArgumentParser(prog="scripts/example_report.py", description=__doc__)
    p.add_argument("--out", default="docs/example_report", help="where the report goes")
    p.add_argument("--report-only", action="store_true", help="do not run the studies")
    args = p.parse_args(argv)
    if not args.report_only:
        for study in STUDIES:
            train("-m", f"+study={study}", "logger=none")
        train(*LAYER_SCALE)
    dirs = [f"multirun/{s}_{MODEL}" for s in STUDIES] + [LAYER_SCALE_DIR]
    dirs = [d for d in dirs if Path(d).is_dir()]
    storage = f"multirun/{STUDIES[0]}_{MODEL}/optuna_journal.log"
    argv = ["all", *dirs, "--storage", storage, "--out", args.out, "--format", "md,csv,html"]
    code = report.main([*argv, "--no-svg"])
    runs = load_runs(dirs[:1]).runs
    chosen = [runs[(runs["presets"] == p) & (runs["seed"] == 0)]["path"] for p in ATTENTION]
    run_dirs = [str(Path(c.iloc[0]).parent) for c in chosen if len(c)]
    out = f"{args.out}/attention"
    return code or attention.main([*run_dirs, "--images", "2", "--out", out, "--no-svg"])


if __name__ == "__main__":
    sys.exit(main())
