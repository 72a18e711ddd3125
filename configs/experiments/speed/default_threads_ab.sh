#!/usr/bin/env bash
# The trainer's default thread count beside the rollout_ahead worker (README "Performance"): the same 30-step
# ListOPD run (expected estimator, λ 1.5, batch 16, 160 training tasks, no validation) with threads 0 and
# rollout_ahead 1 (the trainer takes the cores the worker leaves: 1 + 1 threads on 2 cores), with threads 2 and
# rollout_ahead 1 (what threads 0 meant before: 2 + 1), and synchronous with threads 0; alternating, REPS times.
# Builds its own small pair first (a tiny teacher SFT'd 60 steps, a tiny student 30; a few minutes).
# Prints wall/CPU seconds per run; per-step times are in $P/out_<name>/metrics.jsonl (elapsed_s).
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
P=${P:-runs/speed/threads}
REPS=${REPS:-2}
export HF_HUB_OFFLINE=1
mkdir -p "$P"
[ -f "$P/data/train.jsonl" ] || "$BIN/listopd" data synth --out "$P/data" --seed 5 > /dev/null
[ -f "$P/tok/tokenizer.json" ] || "$BIN/listopd" tokenizer train --tasks "$P/data/train.jsonl" --out "$P/tok" > /dev/null
[ -f "$P/teacher/final/config.json" ] || "$BIN/listopd" sft --model tiny-teacher --tokenizer "$P/tok" \
  --tasks "$P/data/train.jsonl" --steps 60 --out "$P/teacher" --threads 1 > /dev/null 2>&1
[ -f "$P/warm/final/config.json" ] || "$BIN/listopd" sft --model tiny-student --tokenizer "$P/tok" \
  --tasks "$P/data/train.jsonl" --steps 30 --out "$P/warm" --threads 1 > /dev/null 2>&1
head -160 "$P/data/train.jsonl" > "$P/train160.jsonl"
for rep in $(seq "$REPS"); do
  for side in "ahead_default 0 1" "ahead_2_threads 2 1" "sync_default 0 0"; do
    set -- $side
    rm -rf "$P/out_$1"
    /usr/bin/time -f "$1 rep=$rep wall=%e s user=%U s sys=%S s" \
      "$BIN/listopd" opd --student "$P/warm/final" --teacher "$P/teacher/final" --tasks "$P/train160.jsonl" \
      --out "$P/out_$1" --estimator expected --lr 3e-4 --warmup-steps 10 --batch-size 16 \
      --micro-batch-size 16 --steps 30 --eval-every 0 --eval-tasks 1 --save-every 100 --threads "$2" \
      --reward-scale 1.5 --allow-above-cliff --rollout-ahead "$3" > /dev/null 2> "$P/out_$1.err"
    tail -1 "$P/out_$1.err"
  done
done
