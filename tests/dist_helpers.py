"""A tiny world for the multi-process and trainer-option tests (test_distributed, test_trainer_options):
K=4 synthetic tasks, a 512-token tokenizer trained on them, and saved tiny models (random weights).

    world.tasks / world.val    task files (48 train, 6 validation tasks)
    world.tok                  tokenizer folder
    world.student              folder: tiny-student (seed 1) + tokenizer
    world.teacher              folder: tiny-teacher (seed 2) + tokenizer

Built once per test session (the `dist_world` fixture in conftest.py) under a pytest temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

def build_world(root: Path) -> SimpleNamespace:
    from listopd.task.data.synth import make_synth_tasks
    from listopd.train.models import build_model
    from listopd.task.tasks import write_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tasks = make_synth_tasks(n_items=120, n_users=60, k=4, history_len=2, min_history=1, seed=0)
    write_tasks(root / "train.jsonl", [t for t in tasks if t.split == "train"])
    write_tasks(root / "val.jsonl", [t for t in tasks if t.split == "validation"])
    tok = train_tokenizer(task_texts(tasks), 512)
    tok.save_pretrained(str(root / "tok"))
    for name, preset, seed in (("student", "tiny-student", 1), ("teacher", "tiny-teacher", 2)):
        build_model(preset, tok, seed=seed).save_pretrained(str(root / name))
        tok.save_pretrained(str(root / name))
    return SimpleNamespace(root=root, tasks=str(root / "train.jsonl"), val=str(root / "val.jsonl"),
                           tok=str(root / "tok"), student=str(root / "student"), teacher=str(root / "teacher"))


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
