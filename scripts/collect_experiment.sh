#!/usr/bin/env bash
# Copy the small summary files of the tiny-pair sweep (not checkpoints) into docs/experiments/tiny_pair and
# rebuild its report there. Run from the repository root while or after `listopd sweep` runs in runs/exp:
#   bash scripts/collect_experiment.sh
set -euo pipefail
ROOT=$(pwd)
D=$ROOT/docs/experiments/tiny_pair
CFG=$ROOT/configs/experiments/tiny_pair_sweep.yaml
cd runs/exp
rm -rf "$D" && mkdir -p "$D"
cp -r sweep_tiny/results sweep_tiny/baselines "$D"/
cp sweep_tiny/prereg.json sweep_tiny/sweep.json sweep_tiny/size_axis.json "$D"/
cp calib/calibration.json calib/calibration.png "$D"/
"$ROOT"/.venv/bin/listopd prereg check "$CFG" --partial > "$D"/prereg_check.txt 2>&1 || true
cp sweep_tiny/prereg_result.json "$D"/
cd "$ROOT" && .venv/bin/listopd report docs/experiments/tiny_pair
