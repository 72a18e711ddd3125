#!/usr/bin/env bash
# Copy the real pair's small files (configs, metrics logs, summaries, calibration; never checkpoints or models)
# from P (default runs/real_pair, where pipeline.sh writes) into docs/experiments/real_pair/, any time — a run
# still in progress contributes its log so far. Run from the repository root:
#   bash configs/experiments/real_pair/collect.sh
set -euo pipefail
P=${P:-runs/real_pair}
D=docs/experiments/real_pair
mkdir -p "$D"
for stage in teacher warm; do
  [ -f "$P/$stage/metrics.jsonl" ] || continue
  mkdir -p "$D/$stage"
  for f in config.json metrics.jsonl summary.json; do [ -f "$P/$stage/$f" ] && cp "$P/$stage/$f" "$D/$stage/"; done
done
[ -f "$P/calibration/calibration.json" ] && mkdir -p "$D/calibration" && cp "$P"/calibration/calibration.{json,png} "$D/calibration/"
[ -f "$P/sweep.yaml" ] && cp "$P/sweep.yaml" "$D/"
[ -d "$P/sweep/results" ] && mkdir -p "$D/results" && cp "$P"/sweep/results/*.json "$D/results/" 2>/dev/null || true
for run in "$P"/sweep/runs/*/; do
  [ -f "$run/metrics.jsonl" ] || continue
  mkdir -p "$D/runs/$(basename "$run")"
  for f in config.json metrics.jsonl summary.json; do [ -f "$run/$f" ] && cp "$run/$f" "$D/runs/$(basename "$run")/"; done
done
for f in size_axis.json; do [ -f "$P/$f" ] && cp "$P/$f" "$D/"; done
echo "collected into $D"
