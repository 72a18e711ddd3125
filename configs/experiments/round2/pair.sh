#!/usr/bin/env bash
# Round 2's pair (issue 15 step 6): a fresh pair — data seed 23, model seeds 23 (round 1's pair: seed 0 with its
# own SFT budgets; the demo's: seed 0; exploration pair E: seed 11) — built by pair E's recipe before round 2 is
# locked: tiny-teacher 280 fp32 SFT steps, tiny-student warm start 200 steps of the same SFT, calibration on the
# first 40 validation tasks at c = 5. Resumable (each stage skipped when its output exists); one thread.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
P=runs/round2/pair
test -f "$P/evaluation.json" || "$BIN/listopd" demo --seed 23 --out "$P" --opd-steps 1 --eval-tasks 40 \
  --teacher-steps 280 --teacher-schedule constant --warm-steps 200 --warm-stop-at-sampled-parse 0 --sft-batch-size 16 \
  --sft-bf16 false  # the demo's SFT recipe of the time, spelled out
test -f "$P/calibration_v40/calibration.json" || "$BIN/listopd" calibrate --teacher "$P/teacher/final" \
  --warm-start "$P/warm/final" --tasks "$P/data/validation.jsonl" --max-tasks 40 --c 5 --out "$P/calibration_v40"
# the warm start's and the teacher's rates as the runs measure them (the lock's warm_start_rate and threshold)
test -f "$P/validation_rates.json" || "$BIN/python" scripts/validation_rates.py "$P/warm/final" "$P/teacher/final" \
  --tasks "$P/data/validation.jsonl" --n 64 --out "$P/validation_rates.json"
