#!/usr/bin/env bash
# Copy the real pair's small files (configs, metrics logs, summaries, calibration; never checkpoints or models)
# from P (default runs/real_pair, where pipeline.sh writes) into docs/experiments/real_pair/, any time — a run
# still in progress contributes its log so far. Run from the repository root:
#   bash configs/experiments/real_pair/collect.sh
set -euo pipefail
P=${P:-runs/real_pair}
D=${D:-docs/experiments/real_pair}  # D=<folder> collects a second run beside the first
mkdir -p "$D"
logs() {  # SRC DST: a run folder's config, metrics log and summary, where they exist
  [ -f "$1/metrics.jsonl" ] || return 0
  mkdir -p "$2"
  for f in config.json metrics.jsonl summary.json; do [ ! -f "$1/$f" ] || cp "$1/$f" "$2/"; done
}
logs "$P/teacher" "$D/teacher"
logs "$P/warm" "$D/warm"
for run in "$P"/sweep/runs/*/; do [ ! -d "$run" ] || logs "$run" "$D/runs/$(basename "$run")"; done
[ ! -f "$P/calibration/calibration.json" ] || { mkdir -p "$D/calibration"; cp "$P"/calibration/calibration.{json,png} "$D/calibration/"; }
[ ! -f "$P/sweep.yaml" ] || cp "$P/sweep.yaml" "$D/"
[ ! -d "$P/sweep/results" ] || { mkdir -p "$D/results"; cp "$P"/sweep/results/*.json "$D/results/" 2>/dev/null || true; }
[ ! -f "$P/size_axis.json" ] || cp "$P/size_axis.json" "$D/"
echo "collected into $D"
