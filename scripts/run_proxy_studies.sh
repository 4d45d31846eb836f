#!/usr/bin/env bash
# Run (or resume) every ready study at scale=proxy, two trials at a time with one thread each,
# then regenerate docs/example_report from what they hold. Each study's wall time is printed.
# The two trials come from two sweeper workers sharing the study's journal, each asking Optuna
# for its next trial as soon as its own ends; one sweeper with n_jobs=2 would wait for both
# trials of a batch, leaving a core idle while a slow row (dense_conv: ~2.3x) finishes.
#
#   scripts/run_proxy_studies.sh                 # all five studies, then the report
#   scripts/run_proxy_studies.sh table3 nas      # only these studies, then the report
#   PY=/path/to/python scripts/run_proxy_studies.sh
#   SCALE=proxy_fashion scripts/run_proxy_studies.sh table3 kernel_size   # on Fashion-MNIST
#
# A finished study is not run again (its journal in multirun/<study>_van_proxy/ says so); an
# interrupted one resumes. Run it from the repository root on an otherwise idle machine.
set -euo pipefail

PY=${PY:-.venv/bin/python}
STUDIES=("$@")
if [ ${#STUDIES[@]} -eq 0 ]; then
  STUDIES=(table3 kernel_size kernel_size_grid nas layer_scale)
fi

SCALE=${SCALE:-proxy}  # or proxy_fashion: Fashion-MNIST
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per trial; two trials use both cores
WORKERS=${WORKERS:-2}
for study in "${STUDIES[@]}"; do
  start=$(date +%s)
  pids=()
  for ((w = 0; w < WORKERS; w++)); do
    # the first worker creates the study; the others join it a moment later
    # the first worker prints the study's forecast; the others need not time the rows again
    forecast=$([ "$w" -eq 0 ] && echo true || echo false)
    (sleep $((5 * w)) && exec "$PY" -m van_ablate -m "+study=$study" "scale=$SCALE" logger=none \
      "hydra.sweeper.forecast=$forecast") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  echo "study $study: $(( $(date +%s) - start )) s wall, $WORKERS workers"
done
"$PY" scripts/example_report.py
