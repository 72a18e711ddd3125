#!/usr/bin/env bash
# Exploratory round-2 study (see README.md here). Resumable; one job at a time, one thread, fp32.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
OUT=runs/round2_explore
mkdir -p "$OUT"
# the pair: data, tokenizer, SFT teacher and warm start, calibration (the demo's own stages; its two 1-step
# ListOPD runs and the evaluation are a minute)
test -f "$OUT/pairE/evaluation.json" || "$BIN/listopd" demo --seed 11 --out "$OUT/pairE" --opd-steps 1 --eval-tasks 40 \
  --teacher-steps 280 --teacher-schedule constant --warm-steps 280 --warm-stop-at-sampled-parse 0 --sft-batch-size 16 \
  --sft-bf16 false  # the demo's SFT recipe of the time, spelled out
P="$OUT/pairE"
# the demo's warm start (280 fp32 SFT steps) samples valid outputs 70% of the time, the teacher 80%: no headroom.
# 200 steps of the same SFT (lr 1e-3 constant, warm-up 20, seed 11): 20% sampled, 0% greedy on 64 validation tasks
# (40: 0%, 80: 2%, 120: 0%, 160: 5%, 200: 20%)
test -f "$P/warm_short/summary.json" || "$BIN/listopd" sft --model tiny-student --tokenizer "$P/tokenizer" \
  --tasks "$P/data/train.jsonl" --val-tasks "$P/data/validation.jsonl" --steps 200 --batch-size 16 \
  --micro-batch-size 16 --lr 1e-3 --warmup-steps 20 --schedule constant --eval-every 0 --save-every 40 --seed 11 \
  --threads 1 --out "$P/warm_short"
test -f "$P/calibration_w200/calibration.json" || "$BIN/listopd" calibrate --teacher "$P/teacher/final" \
  --warm-start "$P/warm_short/final" --tasks "$P/data/validation.jsonl" --max-tasks 40 --c 5 --out "$P/calibration_w200"
for sweep in lr3e-4 base_ratio sampled; do  # lr1e-4.yaml: superseded by round 2 test 4
  "$BIN/listopd" sweep "configs/experiments/round2_explore/$sweep.yaml"
done
