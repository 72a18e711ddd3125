#!/usr/bin/env bash
# Reproduces the simulator table in docs/simulator.md (about 10 minutes on a 2-core CPU).
# Each line is one `listopd simulate` run; results go to docs/sim/*.json and docs/sim/*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
S=".venv/bin/listopd simulate"
G="--lambdas 1:1.6:0.025"
# 1. the mechanism: exact expected gradient, long budget, four clip strengths (p=0.999, b=0.9)
$S --p 0.999 --b 0.9 --c 2 3 5 8 $G --steps 20000 --out docs/sim/exact_sgd_20k.json --plot docs/sim/exact_sgd_20k.png
# 2. finite budget: the same at 2,000 and 5,000 steps
$S --p 0.999 --b 0.9 --c 2 3 5 8 $G --steps 2000 --out docs/sim/exact_sgd_2k.json
$S --p 0.999 --b 0.9 --c 2 3 5 8 $G --steps 5000 --out docs/sim/exact_sgd_5k.json
# 3. what training sees: sampled tokens (256 per step), Adam, 3 seeds
$S --p 0.999 --b 0.9 --c 2 3 5 8 $G --steps 5000 --dynamics sampled --optimizer adam --seeds 3 \
   --out docs/sim/sampled_adam_5k.json --plot docs/sim/sampled_adam_5k.png
# 4. the other clip mechanisms at c = 3: does anything happen at λ*?
for mode in none truncated_is dual_clip; do
  $S --p 0.999 --b 0.9 --c 3 $G --steps 20000 --clip-mode $mode --out docs/sim/exact_sgd_20k_$mode.json
done
# 5. the brief's worked point: p = 0.99934, base-neutral b = 0.5, c = 2..10; and a K-ary modal class
$S --p 0.99934 --b 0.5 --c 2 5 10 --lambdas 1:1.5:0.02 --steps 20000 --out docs/sim/exact_p99934_b05.json \
   --plot docs/sim/exact_p99934_b05.png
$S --p 0.999 --b 0.9 --c 3 $G --steps 20000 --n-modal 8 --n-tail 32 --out docs/sim/exact_kary8.json
# 6. the K-ary class under SGD is slower by (1/n_modal + 1/n_tail)/2 per step; Adam is scale-free
$S --p 0.999 --b 0.9 --c 3 $G --steps 5000 --n-modal 8 --n-tail 32 --optimizer adam --out docs/sim/exact_kary8_adam.json
