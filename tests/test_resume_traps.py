"""Resume bugs other training stacks shipped, tried here:

- verl resumed from a checkpoint taken at an epoch boundary and silently ran 0 steps (exit 0): a checkpoint
  at the last step of a pass over the data, and one at step 0, resume and train exactly the steps left,
  ending bitwise where an uninterrupted run ends;
- NeMo-RL resumed with a different data set and silently skipped samples: a resumed run whose task file,
  model folder or options differ from its checkpoint's is refused with the difference named; only what
  train/run_identity.py documents may change (a larger steps, eval/save cadence, threads);
- (the 2-process kill-and-resume is in test_distributed.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_world import opd_config, sft_config

from listopd.task.tasks import read_tasks, write_tasks
from listopd.train import checkpoint as ckpt
from listopd.train.opd import run_opd
from listopd.train.scaffold import TrainingRun
from listopd.train.sft import run_sft
from listopd.util.errors import ListopdError


def _metrics(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _weights(run) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run) / "final" / "model.safetensors"))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_from_the_last_step_of_a_pass_runs_the_rest(world, tmp_path):
    per_pass = len(read_tasks(world.train)) // 4  # batch_size 4: step `per_pass` ends the first pass
    assert per_pass >= 2
    kw = dict(batch_size=4, schedule="constant", warmup_steps=0, save_every=per_pass)
    run_sft(sft_config(world, tmp_path / "whole", steps=per_pass + 3, **kw), quiet=True)
    run_sft(sft_config(world, tmp_path / "split", steps=per_pass, **kw), quiet=True)
    assert (tmp_path / "split" / "checkpoints" / f"step-{per_pass:07d}").is_dir()
    summary = run_sft(sft_config(world, tmp_path / "split", steps=per_pass + 3, **kw), quiet=True)
    assert summary["steps"] == per_pass + 3
    assert [r["step"] for r in _metrics(tmp_path / "split")] == list(range(1, per_pass + 4))
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "whole")
    assert _same_weights(tmp_path / "split", tmp_path / "whole")


def test_resume_from_a_step_zero_checkpoint(world, tmp_path, monkeypatch):
    """A checkpoint written at step 0 (the state right where resume would load it), then a crash: the next
    start resumes it and trains all steps, bitwise as an uninterrupted run."""
    cfg = dict(steps=3, lr=1e-3, save_every=50)
    run_opd(opd_config(world, tmp_path / "whole", **cfg), quiet=True)

    real_resume = TrainingRun.resume

    def save_step_zero_then_crash(self, model, optimizer, scheduler, generator=None, **kw):
        out = real_resume(self, model, optimizer, scheduler, generator, **kw)
        assert out == (0, {}, {})
        ckpt.save_training_state(self.run_dir, 0, model, optimizer, scheduler, rng=ckpt.rng_state(generator),
                                 trainer_state={}, identity=self.identity)
        raise RuntimeError("simulated crash after the step-0 checkpoint")

    monkeypatch.setattr(TrainingRun, "resume", save_step_zero_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_opd(opd_config(world, tmp_path / "split", **cfg), quiet=True)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "split" / "checkpoints").glob("step-*")] == ["step-0000000"]
    summary = run_opd(opd_config(world, tmp_path / "split", **cfg), quiet=True)
    assert summary["steps"] == 3
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "whole")
    assert _same_weights(tmp_path / "split", tmp_path / "whole")


@pytest.fixture
def stopped_sft(world, tmp_path):
    """An SFT run stopped at its step-4 checkpoint (steps 4), with its own copy of the task file."""
    data = tmp_path / "data"
    data.mkdir()
    tasks = data / "train.jsonl"
    shutil.copy(world.train, tasks)
    cfg = sft_config(world, tmp_path / "run", tasks=str(tasks), steps=4, save_every=2, schedule="constant")
    run_sft(cfg, quiet=True)
    return cfg


def _refused(cfg, *needles):
    before = sorted(p.name for p in (Path(cfg.out) / "checkpoints").iterdir())
    with pytest.raises(ListopdError) as e:
        run_sft(cfg, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "different run" in msg and all(n in msg for n in needles), msg
    assert sorted(p.name for p in (Path(cfg.out) / "checkpoints").iterdir()) == before  # nothing touched


def test_resume_with_other_task_content_at_the_same_path_refused(stopped_sft):
    from dataclasses import replace as dc_replace

    tasks = read_tasks(stopped_sft.tasks)
    write_tasks(stopped_sft.tasks, tasks[:-1])  # one task fewer: the NeMo-RL trap
    _refused(dc_replace(stopped_sft, steps=6), "tasks holds other content")


def test_resume_with_other_options_refused_naming_each(stopped_sft):
    from dataclasses import replace as dc_replace

    _refused(dc_replace(stopped_sft, steps=6, lr=3e-4, batch_size=2, micro_batch_size=2),
             "lr 0.001 → 0.0003", "batch_size 4 → 2")
    _refused(dc_replace(stopped_sft, steps=6, schedule="cosine"), "schedule 'constant' → 'cosine'")
    _refused(dc_replace(stopped_sft, steps=6, model="tiny-teacher"), "model holds other content")


def test_resume_with_a_smaller_budget_refused(stopped_sft):
    from dataclasses import replace as dc_replace

    with pytest.raises(ListopdError, match="checkpoint is at step 4, past steps = 3"):
        run_sft(dc_replace(stopped_sft, steps=3), quiet=True)


def test_what_may_change_on_resume(stopped_sft, tmp_path):
    """A larger steps, the eval/save cadence and threads; and the same file under another spelling."""
    from dataclasses import replace as dc_replace

    import os

    relative = os.path.relpath(stopped_sft.tasks)
    summary = run_sft(dc_replace(stopped_sft, tasks=relative, steps=6, save_every=3, eval_every=0, threads=2),
                      quiet=True)
    assert summary["steps"] == 6
    assert [r["step"] for r in _metrics(stopped_sft.out)] == list(range(1, 7))
    state = json.loads((Path(stopped_sft.out) / "checkpoints" / "step-0000006" / "state.json").read_text())
    assert state["run"]["inputs"]["tasks"].startswith("file:") and state["run"]["options"]["steps"] == 6
    torch.set_num_threads(1)


def test_opd_resume_with_another_teacher_refused(world, tmp_path):
    cfg = opd_config(world, tmp_path / "run", steps=2, save_every=2)
    run_opd(cfg, quiet=True)
    from dataclasses import replace as dc_replace

    with pytest.raises(ListopdError, match="teacher holds other content") as e:
        run_opd(dc_replace(cfg, steps=4, teacher=world.eos_student), quiet=True)
    assert "\n" not in str(e.value)
    assert run_opd(dc_replace(cfg, steps=3), quiet=True)["steps"] == 3  # the same run continues


def test_an_option_newer_than_the_checkpoint_resumes_at_its_default(world, tmp_path):
    """A checkpoint written before an option existed (its identity lacks the key) resumes when the option is at
    its default, and is refused when it is not (the option would change the run)."""
    from dataclasses import replace as dc_replace

    cfg = opd_config(world, tmp_path / "run", steps=2, save_every=2)
    run_opd(cfg, quiet=True)
    state_file = tmp_path / "run" / "checkpoints" / "step-0000002" / "state.json"
    state = json.loads(state_file.read_text())
    del state["run"]["options"]["rollout_ahead"], state["run"]["options"]["rollout_is_cap"]
    state_file.write_text(json.dumps(state))  # the hashes cover the other files, not state.json itself
    with pytest.raises(ListopdError, match="rollout_ahead None → 1"):
        run_opd(dc_replace(cfg, steps=3, rollout_ahead=1), quiet=True)
    assert run_opd(dc_replace(cfg, steps=3), quiet=True)["steps"] == 3
