#!/usr/bin/env bash
# End-to-end A/B of issue 16's goal (README "Performance"): round 2's sweep shortened to 6 runs x 40 steps,
# on the code this issue started from (OLD, a checkout of it: `git worktree add /tmp/old a1e8f9f`) and on this
# one with the pipelined trainer, alternating (REPS times). Needs pair E (configs/experiments/round2_explore/run.sh)
# and runs/speed/train160.jsonl (header of short_sweep.yaml). Prints wall and CPU seconds per sweep.
#   OLD=/tmp/old bash configs/experiments/speed/six_run_ab.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-.venv/bin}
OLD=${OLD:?a checkout of the old code (git worktree add DIR a1e8f9f)}
REPS=${REPS:-1}
mkdir -p runs/speed
for rep in $(seq "$REPS"); do
  rm -rf runs/speed/six runs/speed/six_ahead
  PYTHONPATH="$OLD/src" /usr/bin/time -f "old rep=$rep wall=%e s user=%U s sys=%S s peak RSS=%M kB" \
    "$BIN/python" -m listopd.cli sweep configs/experiments/speed/six_run_sweep.yaml --quiet > /dev/null \
    2> runs/speed/six_old.err || { tail -5 runs/speed/six_old.err; exit 1; }
  tail -1 runs/speed/six_old.err
  /usr/bin/time -f "new rep=$rep wall=%e s user=%U s sys=%S s peak RSS=%M kB" \
    "$BIN/listopd" sweep configs/experiments/speed/six_run_sweep_ahead.yaml --quiet > /dev/null \
    2> runs/speed/six_new.err || { tail -5 runs/speed/six_new.err; exit 1; }
  tail -1 runs/speed/six_new.err
done
