#!/usr/bin/env bash
# Copy a sweep's small files — its result files and, for every finished run, config.json, metrics.jsonl and
# summary.json (no checkpoints) — into a docs folder, so that the per-step logs the guard replay and the
# mechanism figures read survive the run folders. Files already there are kept (cp -n): a result is final.
#   bash scripts/collect_sweep.sh SWEEP_OUT DEST
#   e.g. bash scripts/collect_sweep.sh /path/to/checkout/runs/round2/sweep docs/experiments/round2
set -euo pipefail
SRC=${1:?usage: collect_sweep.sh SWEEP_OUT DEST}
DEST=${2:?usage: collect_sweep.sh SWEEP_OUT DEST}
mkdir -p "$DEST/results" "$DEST/runs"
shopt -s nullglob
n=0
for result in "$SRC"/results/*.json; do
    name=$(basename "$result" .json)
    cp -n "$result" "$DEST/results/"
    run="$SRC/runs/$name"
    if [ -f "$run/summary.json" ]; then
        mkdir -p "$DEST/runs/$name"
        for f in config.json metrics.jsonl summary.json; do
            [ -f "$run/$f" ] && cp -n "$run/$f" "$DEST/runs/$name/"
        done
    fi
    n=$((n + 1))
done
echo "$n result files in $DEST/results ($(ls "$DEST/runs" | wc -l) run logs in $DEST/runs)"
