#!/usr/bin/env bash
# Run (or resume) every ready study at scale=proxy, two trials at a time with one thread each
# (Hydra's joblib launcher, the sweeper asking Optuna for two trials per batch), then regenerate
# docs/example_report from what they hold. Each study's wall time is printed, to be quoted.
#
#   scripts/run_proxy_studies.sh                 # all five studies, then the report
#   scripts/run_proxy_studies.sh table3 nas      # only these studies, then the report
#   PY=/path/to/python scripts/run_proxy_studies.sh
#
# A finished study is not run again (its journal in multirun/<study>_van_proxy/ says so); an
# interrupted one resumes. Run it from the repository root on an otherwise idle machine.
set -euo pipefail

PY=${PY:-.venv/bin/python}
STUDIES=("$@")
if [ ${#STUDIES[@]} -eq 0 ]; then
  STUDIES=(table3 kernel_size kernel_size_grid nas layer_scale)
fi

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per trial; two trials use both cores
for study in "${STUDIES[@]}"; do
  start=$(date +%s)
  "$PY" -m van_ablate -m "+study=$study" logger=none \
    hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweeper.n_jobs=2
  echo "study $study: $(( $(date +%s) - start )) s wall"
done
"$PY" scripts/example_report.py
