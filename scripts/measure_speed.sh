#!/usr/bin/env bash
# Speed figures for the README, measured on a quiet machine (about 12 minutes on a 2-core CPU):
#   1. paired training step (fwd+bwd), ours against the official straight-line LKA, VAN-B0 at 224,
#      at defaults and with the fast path (channels_last), alternating block by block in one run;
#   2. `make run` wall time before (channels_last off, OpenMP's default spin-waiting) and after;
#   3. the Quickstart `make bench` command's wall time idle and with one core busy, with OpenMP's
#      default spin-waiting and with the package's passive wait policy;
#   4. the loader-vs-model table at 224 px.
# Run from the repository root after `make test`'s set-up:  bash scripts/measure_speed.sh
# `OMP_WAIT_POLICY=default` is not a valid value: GNU OpenMP says so once and keeps its default
# (spin, then sleep), which is what the package did before it asked for passive waiting.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BENCH=(-m van_ablate.bench --model van_b0 --img-size 224 --batch-size 16 --warmup 1 --iters 2)
section() { printf '\n## %s\n\n' "$*"; }
wall() {  # wall seconds of a command (output discarded), or "over N" when it ran past N s
  local limit=$1 start end
  shift
  start=$(date +%s.%N)
  if ! timeout "$limit" "$@" >/dev/null 2>&1; then
    echo "over $limit"
    return
  fi
  end=$(date +%s.%N)
  printf '%.0f\n' "$(echo "$end - $start" | bc)"
}
busy_core() {  # one process spinning on CPU 0 until killed
  taskset -c 0 "$PY" -c "while True: pass" &
  BUSY=$!
}

echo "machine: $(nproc) CPUs, $(uname -m), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -c "import torch; print('torch', torch.__version__)"

section "1. Training step, ours vs the official straight-line LKA (VAN-B0, 224 px, batch 16)"
echo "defaults:"
"$PY" "${BENCH[@]}" --repeats 4 --compare 2>/dev/null
echo
echo "fast path (channels_last):"
"$PY" "${BENCH[@]}" --repeats 4 --compare --channels-last 2>/dev/null

section "2. make run wall time (6 epochs of van_proxy on the built-in data)"
RUNS=$(mktemp -d)
# The built-in data is generated on first use; make it now so neither timed run pays for it.
"$PY" -c "from van_ablate.data import builtin; builtin.load(4000, 1000, seed=0)"
before=$(OMP_WAIT_POLICY=default wall 400 make run ARGS="train.channels_last=false logger=none hydra.run.dir=$RUNS/before")
after=$(wall 400 make run ARGS="logger=none hydra.run.dir=$RUNS/after")
echo "| make run | wall s | final img/s | threads | channels_last | wait policy |"
echo "|---|---:|---:|---:|---|---|"
for which in before after; do
  secs=$([ "$which" = before ] && echo "$before" || echo "$after")
  "$PY" - "$RUNS/$which/results.json" "$which" "$secs" <<'PYEOF' || echo "| $which | $secs | no results.json | | | |"
import json, sys
r = json.load(open(sys.argv[1])); s = r["setup"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['final']['images_per_sec']:.0f} | "
      f"{s['threads']} | {s['channels_last']} | {s['wait_policy']} |")
PYEOF
done
rm -rf "$RUNS"

section "3. make bench (the Quickstart command) wall time"
echo "| machine | OpenMP wait | wall s |"
echo "|---|---|---:|"
echo "| idle | passive (package default) | $(wall 300 make bench) |"
busy_core
trap 'kill $BUSY 2>/dev/null' EXIT
echo "| one core busy | passive (package default) | $(wall 300 make bench) |"
echo "| one core busy | default spin (before) | $(OMP_WAIT_POLICY=default wall 180 make bench) |"
kill "$BUSY"
trap - EXIT

section "4. Loader vs model at 224 px (paper transforms, generated JPEGs)"
"$PY" -m van_ablate.loader_bench --model van_b0 --img-size 224 --batch-size 32 --images 256 --epochs 2 2>/dev/null
