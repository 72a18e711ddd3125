#!/usr/bin/env bash
# Continue the two locked sweeps — round 2 (locked on commit 618bf84) and issue 19 test 7 (964429f) — from any
# machine, a fresh one included: each runs from a git worktree pinned at its lock's commit (so later work on the
# trainer cannot touch it), on pair R rebuilt there by configs/experiments/round2/pair.sh and checked
# against the locked calibration (every number equal), with the result files already
# committed under docs/ put back so that the sweep skips those runs. Resumable: run it again after an
# interruption; progress in $W/worker1.log and $W/worker2.log (one per
# worker).
#   bash configs/experiments/continue_locked.sh            # from the repository root, after `make install`
# Collect what finished (any time): bash scripts/collect_sweep.sh $W/round2/runs/round2/sweep docs/experiments/round2
#                                   bash scripts/collect_sweep.sh $W/issue19/runs/issue19/sweep docs/experiments/issue19
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${W:-$ROOT/../locked}            # where the pinned worktrees live
BIN=$ROOT/.venv/bin                # the same dependencies: pyproject.toml is unchanged since both locks
export HF_HUB_OFFLINE=1 BIN
# Both locks ran on an AVX2-only CPU. Where the CPU has AVX-512, torch's own kernels (softmax, norms, ...) take
# other code paths, and 280 SFT steps later pair R comes out a different pair (measured 2026-12-02 on an AMD
# EPYC with AVX-512: λ* 1.586 at close_brace against the locked 1.532 at open_brace). Pinning torch, MKL and
# oneDNN to their AVX2 paths rebuilds the locked pair exactly, and the runs compute as they did on the lock's machine.
export ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
# Both locks ran on AMD CPUs, and on Intel CPUs the pins are not enough: MKL (torch's BLAS) honours MKL_CBWR only
# on Intel processors and runs its own AUTO dispatch on others (its documentation), so Intel's AVX2 branch is not
# the AMD machine's kernels. Measured 2026-12-02 on an Intel Xeon (AVX-512, AMX) with the pins above: the rebuilt
# pair R has λ* 1.646 at close_bracket (locked 1.532 at open_brace), warm start 0.156 / teacher 0.75 sampled on
# 64 validation tasks (locked 0.109 / 0.891), and the calibration check below refused it after 9 minutes. So
# refuse at once on a CPU that is not AMD (FORCE_CPU=1 tries anyway; the check below still guards the lock).
vendor=$(grep -m1 vendor_id /proc/cpuinfo | awk '{print $3}')
if [ "$vendor" != AuthenticAMD ] && [ "${FORCE_CPU:-0}" != 1 ]; then
    echo "continue_locked.sh: pair R can be rebuilt only on an AMD CPU (this one is $vendor: MKL's kernels differ); the locked sweeps wait for one" >&2
    exit 2
fi

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
# Pair R's SFT ran in float32 (built where bf16 is emulated, so the demo fell back to it). On a CPU with native
# bf16 (AVX512-BF16, AMX) the demo would autocast its SFT and build a different pair: run pair.sh's first stage
# with float32 forced, the same command otherwise; pair.sh then skips it.
test -f runs/round2/pair/evaluation.json || PYTHONPATH=$W/round2/src "$BIN/listopd" demo --seed 23 --warm-steps 200 \
  --out runs/round2/pair --opd-steps 1 --eval-tasks 40 --sft-bf16 false
PYTHONPATH=$W/round2/src bash configs/experiments/round2/pair.sh
# The rebuilt calibration must equal the locked one in every field but its own run time ("seconds"): strings and
# integers exactly, floats to 1e-9 relative (numpy's own SIMD summation differs between CPUs in the last bits:
# measured ≤ 4e-13 on an AVX-512 machine, where the default kernels gave a different pair, λ* off by 3%); then the
# committed copy of the locked file (byte-identical to it: sha256 in prereg.json) takes its place.
python3 - "$ROOT/docs/experiments/round2/calibration.json" runs/round2/pair/calibration_v40/calibration.json <<'PY' || exit 2
import json, math, sys
locked, rebuilt = (json.load(open(p)) for p in sys.argv[1:])
worst = [0.0]
def same(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        worst[0] = max(worst[0], abs(a - b) / max(abs(a), abs(b), 1e-300))
        return math.isclose(a, b, rel_tol=1e-9)
    return type(a) is type(b) and a == b
for d in (locked, rebuilt):
    d.pop("seconds", None)
if not same(locked, rebuilt):
    sys.exit("pair R rebuilt differently from the locked one: its calibration differs from the locked file")
print(f"pair R rebuilt: calibration equal to the locked one (largest relative difference {worst[0]:.1e})")
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
# A sweep's runs not yet done, one --only pattern a line, each selecting its run alone (a glob matches the whole
# name: "[l]am1.500_c5_s0_T300" is that run, where the plain substring would also select "..._T300_aware"); the
# runs matching FIRST (round 2's fine grid, tests 1, 5, 6, A and B) first, then the rest in the sweep's order.
queue() {  # WORKTREE CONFIG [FIRST]
    (cd "$W/$1" && PYTHONPATH=$W/$1/src "$BIN/python" - "$2" "${3:-}" <<'PY'
import fnmatch, sys
from listopd.experiment.sweep import load_sweep, select
sweep = load_sweep(sys.argv[1])
first = [r for r in sweep.runs if sys.argv[2] and fnmatch.fnmatchcase(r.name, sys.argv[2])]
for run in first + [r for r in sweep.runs if r not in first]:
    pattern = f"[{run.name[0]}]{run.name[1:]}"
    assert select(sweep, pattern) == [run], pattern
    if not sweep.result_path(run).exists():
        print(pattern)
PY
    )
}
# A worker takes the next run that no other worker has claimed (mkdir is atomic) and trains it, until none is
# left: issue 19's (8 runs were left on 2026-12-03, so both cores finish its test first), then round 2's.
# Claims live in this invocation's own folder, so a rerun after an interruption starts afresh.
claims=$W/claims.$$
drain() {  # LOG WORKTREE CONFIG [FIRST]: train the queue's runs no other worker has claimed
    local todo pattern
    todo=$(queue "$2" "$3" "${4:-}") || { echo "the queue of $2 could not be read" >&2; return 1; }
    mkdir -p "$claims/$2"
    while read -r pattern; do
        [ -n "$pattern" ] && mkdir "$claims/$2/$pattern" 2>/dev/null || continue
        sweep "$2" "$3" --only "$pattern" >> "$1" 2>&1 < /dev/null || echo "$2 run $pattern failed (see $1)" >&2
    done <<< "$todo"
}
worker() {  # LOG
    drain "$1" issue19 configs/experiments/issue19/sweep.yaml
    drain "$1" round2 configs/experiments/round2/sweep.yaml '*_c5_s[234]_T300'
}
# Two workers, one core each (each trains on one thread: 4-5 s a step beside the other on the AMD EPYC,
# 2026-12-03).
worker "$W/worker1.log" &
other=$!
worker "$W/worker2.log"
wait $other
