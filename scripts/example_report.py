"""The README's example report: ``report all`` of the ready proxy studies' runs.

Reads what the sweeper's ready studies at ``scale=proxy`` and ``scale=proxy_fashion`` left in
``multirun/`` (``table3``,
``kernel_size``, ``kernel_size_grid``, ``nas``, ``layer_scale``; ``scripts/run_proxy_studies.sh``
runs them) and writes the report of all their runs beside the paper's figures into
``docs/example_report``, with the attention maps of three ablations (by name) in ``attention/``.
From the repository root; every path inside the report is relative to it::

    .venv/bin/python scripts/example_report.py                 # studies without a folder skipped
    .venv/bin/python scripts/example_report.py --out /tmp/rep  # elsewhere
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from van_ablate.analysis import attention, report

STUDIES = ("table3", "kernel_size", "kernel_size_grid", "nas", "layer_scale")
MODEL = "van_proxy"
# The study whose trials the Pareto front, history and importances are drawn from: the search.
SEARCH = "nas"
ATTENTION = ("baseline", "no_dwd_conv", "dense_conv")  # seed 0 of each, side by side


def main(argv: Sequence[str] | None = None) -> int:
    """``report all`` of the studies' runs, then the attention maps; exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="scripts/example_report.py", description=__doc__)
    p.add_argument("--out", default="docs/example_report", help="where the report goes")
    p.add_argument("--multirun", default="multirun", help="where the studies ran")
    args = p.parse_args(argv)
    # a study's folder is <study>_<model>, or <study>_<model>_<data> for the adaptive ones
    found = [sorted(Path(args.multirun).glob(f"{s}_{MODEL}*")) for s in STUDIES]
    dirs = [str(d) for ds in found for d in ds if d.is_dir()]
    if not dirs:
        print(f"error: --multirun={args.multirun!r}: holds none of the studies", file=sys.stderr)
        return 2
    # the search's journal for the Pareto front, history and importances; without a search
    # study the report has none (a front across Table 3's rows and seeds would mean nothing)
    search = [f"{d}/optuna_journal.log" for d in dirs if Path(d).name.startswith(SEARCH)]
    storage = next((s for s in search if Path(s).is_file()), None)
    argv = ["all", *dirs, "--out", args.out, "--format", "md,csv,html", "--no-svg"]
    code = report.main([*argv, *(["--storage", storage] if storage else [])])
    maps = [dirs[0], "--ablations", ",".join(ATTENTION), "--images", "2", "--no-svg"]
    return code or attention.main([*maps, "--out", f"{args.out}/attention"])


if __name__ == "__main__":
    sys.exit(main())
