#!/usr/bin/env bash
# Exploratory round-2 study (see README.md here). Resumable; one job at a time, one thread, fp32.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
OUT=runs/round2_explore
mkdir -p "$OUT"
# the pair: data, tokenizer, SFT teacher and warm start, calibration (the demo's own stages; its two 1-step
# ListOPD runs and the evaluation are a minute)
test -f "$OUT/pairE/evaluation.json" || "$BIN/listopd" demo --seed 11 --out "$OUT/pairE" --opd-steps 1 --eval-tasks 40
for sweep in lr3e-4 base_ratio lr1e-4 sampled; do
  "$BIN/listopd" sweep "configs/experiments/round2_explore/$sweep.yaml"
done
