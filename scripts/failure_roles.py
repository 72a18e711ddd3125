"""Where sampled outputs break the contract: for each model folder, one sample per task at temperature 1 from
the evaluation seed (as `evaluate` draws them), each failure classed by the structural role of the first
contract-breaking token (listopd.experiment.calibrate.failure_role).

    cd runs/exp && ../../.venv/bin/python ../../scripts/failure_roles.py data/validation.jsonl \
        warm300/final sweep_explore_lr/runs/lam3.000_c5_s0_T120/final
"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> int:
    import torch

    from listopd.experiment.calibrate import failure_role
    from listopd.task.contract import RankingContract
    from listopd.train.models import load_model, load_tokenizer
    from listopd.task.tasks import read_tasks
    from listopd.train.evaluation import evaluation_outputs

    torch.set_num_threads(1)
    tasks = read_tasks(sys.argv[1])
    for folder in sys.argv[2:]:
        model, tokenizer = load_model(folder).eval(), load_tokenizer(folder)
        outputs = evaluation_outputs(model, tokenizer, tasks, max_new_tokens=64, temperature=1.0)
        role = {t.id: failure_role(RankingContract.for_task(t), outputs[t.id]) for t in tasks}
        roles = Counter(role.values())
        example = next((outputs[t.id] for t in tasks if role[t.id] != "ok"), "")
        print(f"{folder}: {dict(roles.most_common())}\n  e.g. {example[:120]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
