"""The tiny-model world shared by the trainer tests (test_rollout, test_config, test_trainer, ...).

`build_world` builds everything once per test session (the `world` fixture in conftest.py) under one
pytest temporary folder:

    world.train / world.val    K=4 synthetic task files (32 train, 4 validation tasks, ~180-token prompts)
    world.tok_dir              byte-level BPE tokenizer trained on those tasks (~800 tokens)
    world.student              folder: tiny-student (random init, seed 1) + tokenizer
    world.eos_student          folder: tiny-student with an *untied* output layer whose EOS row points along
                               the mean final hidden state, so its 8-token rollouts end at varied lengths
                               (a random-init model almost never emits EOS)
    world.teacher              folder: tiny-teacher (random init, seed 2) + tokenizer
    world.other_teacher        folder: tiny-teacher + a *different* tokenizer (trained on other text)

Tests take the `world` fixture by name; `opd_config`, `sft_config` and `replace` are plain helpers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

def build_world(root: Path) -> SimpleNamespace:
    import torch

    from listopd.task.data.synth import make_synth_tasks
    from listopd.train.models import build_model
    from listopd.task.tasks import write_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tasks = make_synth_tasks(n_items=60, n_users=40, history_len=2, min_history=1, k=4, seed=0)
    train = [t for t in tasks if t.split == "train"]
    val = [t for t in tasks if t.split == "validation"]
    write_tasks(root / "train.jsonl", train)
    write_tasks(root / "val.jsonl", val)

    tok = train_tokenizer(task_texts(tasks), vocab_size=1024)
    tok_dir = root / "tok"
    tok.save_pretrained(str(tok_dir))

    def save(model, tokenizer, name):
        folder = root / name
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        return folder

    student = save(build_model("tiny-student", tok, seed=1), tok, "student")
    eos_student = save(_eos_prone_student(tok), tok, "eos_student")
    teacher = save(build_model("tiny-teacher", tok, seed=2), tok, "teacher")
    # a tokenizer trained on other text: different size and different ids
    other_tasks = make_synth_tasks(n_items=60, n_users=10, history_len=2, min_history=1, k=8, seed=5)
    other_tok = train_tokenizer(task_texts(other_tasks), vocab_size=600)
    other_teacher = save(build_model("tiny-teacher", other_tok, seed=2), other_tok, "other_teacher")
    torch.set_num_threads(1)
    return SimpleNamespace(root=root, tasks=tasks, train_tasks=train, val_tasks=val,
                           train=str(root / "train.jsonl"), val=str(root / "val.jsonl"), tok=tok,
                           tok_dir=str(tok_dir), student=str(student), eos_student=str(eos_student),
                           teacher=str(teacher),
                           other_tok=other_tok, other_teacher=str(other_teacher))


def _eos_prone_student(tok, target_logit: float = 4.0):
    """tiny-student (seed 1) with an untied lm_head whose EOS row is set so that the EOS logit is about
    `target_logit` after a prompt (P(EOS) ≈ 5% per step, varying with the context)."""
    import torch

    from listopd.task.data.synth import make_synth_tasks
    from listopd.train.models import build_model
    from listopd.train.rollout import left_pad, position_ids
    from listopd.task.prompts import encode_prompt

    model = build_model("tiny-student", tok, seed=1)
    tasks = make_synth_tasks(n_items=60, n_users=40, history_len=2, min_history=1, k=4, seed=0)[:8]
    ids, mask = left_pad([encode_prompt(t, tok) for t in tasks], tok.pad_token_id)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                  output_hidden_states=True).hidden_states[-1][:, -1]
        d = h.mean(0)
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
        model.lm_head.weight[tok.eos_token_id] = d / d.norm() ** 2 * target_logit
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


def opd_config(world, out, **overrides):
    """A small, fast OPDConfig on the world's tiny models (λ = 1, no validation, 8-token completions)."""
    from listopd.train.opd_config import OPDConfig

    base = dict(student=world.student, teacher=world.teacher, tasks=world.train, out=str(out),
                steps=1, batch_size=4, micro_batch_size=2, max_new_tokens=8, lr=1e-3, eval_every=0,
                save_every=50, seed=3, threads=1)
    base.update(overrides)
    cfg = OPDConfig(**base)
    cfg.validate()
    return cfg


def sft_config(world, out, **overrides):
    from listopd.train.sft_config import SFTConfig

    base = dict(tasks=world.train, out=str(out), tokenizer=world.tok_dir, model="tiny-student", steps=6,
                batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2, eval_every=0, save_every=2,
                seed=0, threads=1)
    base.update(overrides)
    cfg = SFTConfig(**base)
    cfg.validate()
    return cfg


def replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)
