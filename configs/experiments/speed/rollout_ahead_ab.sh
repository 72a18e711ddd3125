#!/usr/bin/env bash
# A/B of the pipelined trainer (README "Performance"): the same 40-step ListOPD run on pair E (expected estimator,
# λ 1.5, batch 16, 160 training tasks = four passes, no validation), synchronous (rollout_ahead 0) and pipelined
# (rollout_ahead 1), alternating, twice. Needs pair E (configs/experiments/round2_explore/run.sh) and
#   mkdir -p runs/speed && head -160 runs/round2_explore/pairE/data/train.jsonl > runs/speed/train160.jsonl
# Prints wall/CPU seconds per run; per-step times are in runs/speed/ab_<ahead>/metrics.jsonl (elapsed_s).
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
P=runs/round2_explore/pairE
for rep in 1 2; do
  for ahead in 0 1; do
    rm -rf "runs/speed/ab_$ahead"
    /usr/bin/time -f "rollout_ahead=$ahead rep=$rep wall=%e s user=%U s sys=%S s peak RSS=%M kB" \
      "$BIN/listopd" opd --student $P/warm_short/final --teacher $P/teacher/final --tasks runs/speed/train160.jsonl \
      --out "runs/speed/ab_$ahead" --estimator expected --lr 3e-4 --warmup-steps 10 --batch-size 16 \
      --micro-batch-size 16 --steps 40 --eval-every 0 --eval-tasks 1 --save-every 100 --threads 1 \
      --reward-scale 1.5 --allow-above-cliff --rollout-ahead $ahead > /dev/null 2> "runs/speed/ab_$ahead.err"
    tail -1 "runs/speed/ab_$ahead.err"
  done
done
