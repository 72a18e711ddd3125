"""A ListOPD run's sampled strict parse on its demo's test tasks, and its lift over the demo's warm start on the same
tasks with the demo's paired bootstrap interval (the numbers of the demo's report, for a run made outside it):

    .venv/bin/python docs/experiments/demo_2026-12-07_zen4_k5/stalled_seeds/lift_on_test.py runs/n_s1 runs/stall_s1_T360
"""
import sys
from pathlib import Path

import numpy as np
import torch

from listopd.experiment.demo import evaluate_on_test
from listopd.task.metrics import bootstrap_ci

torch.set_num_threads(1)
demo, run = Path(sys.argv[1]), Path(sys.argv[2])
test = demo / "data" / "test.jsonl"
warm, opd = evaluate_on_test(demo / "warm", test, 150), evaluate_on_test(run, test, 150)
diff = np.array(opd["valid"], float) - np.array(warm["valid"], float)
low, high = (100 * x for x in bootstrap_ci(diff, n_boot=2000))
print(f"{run}: sampled {100 * opd['strict_parse_rate']:.1f}% (warm start {100 * warm['strict_parse_rate']:.1f}%), "
      f"lift {100 * diff.mean():+.1f} points [{low:+.1f}, {high:+.1f}], greedy {100 * opd['greedy']['strict_parse_rate']:.1f}%")
