#!/usr/bin/env bash
# Continue the two locked sweeps — round 2 (locked on commit 618bf84) and issue 19 test 7 (964429f) — from any
# machine, a fresh one included: each runs from a git worktree pinned at its lock's commit (so later work on the
# trainer cannot touch it), on pair R rebuilt there by configs/experiments/round2/pair.sh and checked
# against the locked calibration (every number equal), with the result files already
# committed under docs/ put back so that the sweep skips those runs. Resumable: run it again after an
# interruption; progress in $W/round2.log and $W/issue19.log.
#   bash configs/experiments/continue_locked.sh            # from the repository root, after `make install`
# Collect what finished (any time): bash scripts/collect_sweep.sh $W/round2/runs/round2/sweep docs/experiments/round2
#                                   bash scripts/collect_sweep.sh $W/issue19/runs/issue19/sweep docs/experiments/issue19
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${W:-$ROOT/../locked}            # where the pinned worktrees live
BIN=$ROOT/.venv/bin                # the same dependencies: pyproject.toml is unchanged since both locks
export HF_HUB_OFFLINE=1 BIN

pinned() {  # NAME COMMIT: a worktree of this repository at COMMIT
    [ -d "$W/$1" ] || git -C "$ROOT" worktree add --detach "$W/$1" "$2"
    [ "$(git -C "$W/$1" rev-parse HEAD)" = "$(git -C "$ROOT" rev-parse "$2")" ] || {
        echo "$W/$1 is not at $2" >&2; exit 2; }
}

restore() {  # WORKTREE SWEEP_OUT DOCS: the lock and the finished results, from the committed copies
    mkdir -p "$1/$2/results"
    [ -f "$1/$2/prereg.json" ] || cp "$ROOT/$3/prereg.json" "$1/$2/prereg.json"
    cp -n "$ROOT/$3"/results/*.json "$1/$2/results/" 2>/dev/null || true
}

pinned round2 618bf84
pinned issue19 964429f
cd "$W/round2"
PYTHONPATH=$W/round2/src bash configs/experiments/round2/pair.sh
# The rebuilt calibration must equal the locked one in every field but its own run time ("seconds"); then the
# committed copy of the locked file (byte-identical to it: sha256 in prereg.json) takes its place.
python3 - "$ROOT/docs/experiments/round2/calibration.json" runs/round2/pair/calibration_v40/calibration.json <<'PY' || exit 2
import json, sys
locked, rebuilt = (json.load(open(p)) for p in sys.argv[1:])
for d in (locked, rebuilt):
    d.pop("seconds", None)
if locked != rebuilt:
    sys.exit("pair R rebuilt differently from the locked one: its calibration differs from the locked file")
PY
cp "$ROOT/docs/experiments/round2/calibration.json" runs/round2/pair/calibration_v40/calibration.json
locked=$(python3 -c "import json; print(json.load(open('$ROOT/docs/experiments/round2/prereg.json'))['calibration']['sha256'])")
echo "$locked  runs/round2/pair/calibration_v40/calibration.json" | sha256sum -c -
mkdir -p "$W/issue19/runs/round2"
[ -e "$W/issue19/runs/round2/pair" ] || ln -s "$W/round2/runs/round2/pair" "$W/issue19/runs/round2/pair"
restore "$W/round2" runs/round2/sweep docs/experiments/round2
restore "$W/issue19" runs/issue19/sweep docs/experiments/issue19

sweep() {  # WORKTREE CONFIG [--only PATTERN]
    (cd "$W/$1" && PYTHONPATH=$W/$1/src "$BIN/listopd" sweep "${@:2}")
}
# The two sweeps side by side, one core each (each trains on one thread: 4.2 s a step alone, measured 2026-12-02);
# round 2 first runs its fine grid (seeds 2-4: tests 1, 5, 6, A and B), then the rest of its grid.
sweep issue19 configs/experiments/issue19/sweep.yaml > "$W/issue19.log" 2>&1 &
other=$!
sweep round2 configs/experiments/round2/sweep.yaml --only '*_c5_s[234]_T300' > "$W/round2.log" 2>&1
sweep round2 configs/experiments/round2/sweep.yaml >> "$W/round2.log" 2>&1
wait $other
