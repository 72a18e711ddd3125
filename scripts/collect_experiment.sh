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
# the trained students' per-role mass (resumable: models already measured are kept in runs/exp/student_mass.json)
"$ROOT"/.venv/bin/python "$ROOT"/scripts/trained_student_mass.py sweep_tiny --teacher teacher400 \
    --warm-start warm300/final --tasks data/validation.jsonl --only '_c5_s[01]_T(60|120)' --roles id,id_8,quote --out student_mass
cp student_mass.json student_mass.png "$D"/
cd "$ROOT" && .venv/bin/listopd report docs/experiments/tiny_pair

# The exploratory follow-up (NOT pre-registered): 10× the learning rate, 120 steps
# (configs/experiments/tiny_pair_explore_lr.yaml, run in runs/exp like the locked sweep)
E=$ROOT/docs/experiments/tiny_pair_explore_lr
cd "$ROOT"/runs/exp
if [ -d sweep_explore_lr/results ]; then
    rm -rf "$E" && mkdir -p "$E"
    cp -r sweep_explore_lr/results "$E"/
    cp sweep_explore_lr/sweep.json calib/calibration.json "$E"/
    "$ROOT"/.venv/bin/python "$ROOT"/scripts/trained_student_mass.py sweep_explore_lr --teacher teacher400 \
        --warm-start warm300/final --tasks data/validation.jsonl --roles id,id_8,quote --out student_mass_explore
    cp student_mass_explore.json student_mass_explore.png "$E"/
    "$ROOT"/.venv/bin/python "$ROOT"/scripts/failure_roles.py data/validation.jsonl warm300/final \
        sweep_explore_lr/runs/*/final sweep_tiny/runs/lam10.000_c5_s[01]_T60/final > "$E"/failure_roles.txt
    # the locked sweep's onset rule, reused (this sweep has no prereg.json of its own)
    cd "$ROOT" && .venv/bin/listopd report docs/experiments/tiny_pair_explore_lr --onset-threshold 0.15 --onset-drop 0.15
fi
