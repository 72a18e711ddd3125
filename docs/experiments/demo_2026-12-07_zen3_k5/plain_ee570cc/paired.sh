# Paired differences between the ListOPD runs' test parse (same 150 tasks, 2,000 bootstrap resamples), from a folder
# holding opd_plain, opd_below and opd_above (this folder's parent's README says how it was made).
run=${1:-runs/plain}
.venv/bin/python -c "
import json, sys, numpy as np
from listopd.task.metrics import bootstrap_ci
v = {s: np.array(json.load(open(f'$run/opd_{s}/test_evaluation.json'))['valid'], float) for s in ('plain', 'below', 'above')}
for a, b in (('above', 'plain'), ('below', 'plain'), ('above', 'below')):
    d = v[a] - v[b]
    print(f'{a} - {b}: {100 * d.mean():+.1f} points', [round(100 * x, 1) for x in bootstrap_ci(d, n_boot=2000)])
"
