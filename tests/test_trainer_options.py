"""Trainer options on tiny models, one process: LoRA (PEFT, `lora_r`) and bf16 autocast (`bf16`).

LoRA: the checkpoints hold only the adapter (`lora_A`/`lora_B` tensors), the base weights never move,
resuming after a crash reproduces the uninterrupted run, and `final/` is a plain merged model (no adapter
files) that `listopd.train.models.load_model` loads. bf16: 2 steps on the CPU under autocast give finite losses
that differ slightly from float32 (so autocast really ran).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from dist_helpers import read_metrics, read_summary
from safetensors.torch import load_file

pytest.importorskip("peft")
pytestmark = pytest.mark.timeout(300)


def _sft_cfg(world, out, **kw):
    from listopd.train.sft_config import SFTConfig

    base = dict(model="tiny-student", tokenizer=world.tok, tasks=world.tasks, out=str(out), steps=2, batch_size=4,
                micro_batch_size=2, lr=1e-2, warmup_steps=0, eval_every=0, save_every=1, threads=1, seed=0)
    return SFTConfig(**{**base, **kw})


def _opd_cfg(world, out, **kw):
    from listopd.train.opd_config import OPDConfig

    base = dict(student=world.student, teacher=world.teacher, tasks=world.tasks, out=str(out), steps=2,
                batch_size=4, micro_batch_size=2, max_new_tokens=12, reward_scale=1.25, lr=1e-2, eval_every=0,
                save_every=1, threads=1, seed=0)
    return OPDConfig(**{**base, **kw})


def _checkpoint(run, step):
    return load_file(str(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"))


def _crash_and_resume(run, last_step, rerun):
    """Forget the last step (its checkpoint, the export, the summary), rerun the same config: it resumes
    from the checkpoint before and must write the same last record and the same adapter."""
    before = read_metrics(run)[-1]
    adapter = _checkpoint(run, last_step)
    shutil.rmtree(run / "checkpoints" / f"step-{last_step:07d}")
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()
    log = run / "metrics.jsonl"  # mark the kept records: a resumed run keeps them, a fresh start rewrites them
    log.write_text("".join(line.rstrip()[:-1] + ', "kept": true}\n' for line in log.read_text().splitlines()))
    summary = rerun()
    assert summary["steps"] == last_step
    metrics = read_metrics(run)
    assert [r["step"] for r in metrics] == list(range(1, last_step + 1))
    assert [r.get("kept", False) for r in metrics] == [True] * (last_step - 1) + [False], "did not resume"
    after = metrics[-1]
    before.pop("elapsed_s"), after.pop("elapsed_s")
    assert after == pytest.approx(before, rel=1e-6, abs=1e-9)
    again = _checkpoint(run, last_step)
    assert all(torch.allclose(again[k], adapter[k], rtol=0, atol=1e-7) for k in adapter)


def _check_adapter_checkpoints(run, n_layers=6):
    first, second = _checkpoint(run, 1), _checkpoint(run, 2)
    assert first and all("lora_" in k for k in first), "a LoRA checkpoint holds only adapter tensors"
    # all-linear: q, k, v, o, gate, up, down in each layer (not the tied lm_head), an A and a B each
    assert len(first) == n_layers * 7 * 2
    changed = [k for k in first if not torch.equal(first[k], second[k])]
    assert changed and all("lora_" in k for k in changed)


def _check_plain_export(run, reference):
    """final/ is a plain model: no adapter files, no lora tensors, the same tensor names and shapes as the
    model the run started from, loadable with load_model."""
    from listopd.train.models import load_model

    final = run / "final"
    assert not (final / "adapter_config.json").exists() and not (final / "adapter_model.safetensors").exists()
    model = load_model(final)
    names = {k: v.shape for k, v in model.state_dict().items()}
    assert not any("lora" in k or "base_layer" in k for k in names)
    assert names == {k: v.shape for k, v in reference.state_dict().items()}
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert torch.isfinite(logits).all()
    return model


def test_sft_lora_adapter_only_resume_and_merged_export(dist_world, tmp_path):
    from listopd.train.models import build_model, load_tokenizer
    from listopd.train.sft import run_sft

    run = tmp_path / "sft_lora"
    cfg = _sft_cfg(dist_world, run, lora_r=4, lora_alpha=8)
    summary = run_sft(cfg, quiet=True)
    assert summary["steps"] == 2 and summary["ranks_identical"] is True
    _check_adapter_checkpoints(run)

    # merged export = the untouched base (same preset and seed) + (alpha/r)·B·A on the adapted linears
    base = build_model("tiny-student", load_tokenizer(dist_world.tok), seed=cfg.seed)
    merged = _check_plain_export(run, base).state_dict()
    adapter, scale = _checkpoint(run, 2), cfg.lora_alpha / cfg.lora_r
    for name, w0 in base.state_dict().items():
        prefix = "base_model.model." + name.removesuffix(".weight")
        if f"{prefix}.lora_A.default.weight" in adapter:
            delta = scale * adapter[f"{prefix}.lora_B.default.weight"] @ adapter[f"{prefix}.lora_A.default.weight"]
            assert float(delta.abs().max()) > 0
            torch.testing.assert_close(merged[name], w0 + delta, rtol=0, atol=1e-6)
        else:
            assert torch.equal(merged[name], w0), f"{name} is not adapted and must not move"

    _crash_and_resume(run, 2, lambda: run_sft(cfg, quiet=True))


def test_opd_lora_adapter_only_resume_and_merged_export(dist_world, tmp_path):
    from listopd.train.models import load_model
    from listopd.train.opd import run_opd

    run = tmp_path / "opd_lora"
    cfg = _opd_cfg(dist_world, run, lora_r=4)
    summary = run_opd(cfg, quiet=True)
    assert summary["steps"] == 2 and summary["ranks_identical"] is True
    _check_adapter_checkpoints(run)
    start = load_model(dist_world.student)
    merged = _check_plain_export(run, start).state_dict()
    moved = [k for k, v in start.state_dict().items() if not torch.equal(merged[k], v)]
    assert moved and all(k.endswith("proj.weight") for k in moved), "only adapted linears move"
    _crash_and_resume(run, 2, lambda: run_opd(cfg, quiet=True))


def test_sft_bf16_two_steps(dist_world, tmp_path):
    from listopd.train.sft import run_sft

    run_sft(_sft_cfg(dist_world, tmp_path / "fp32", save_every=10), quiet=True)
    summary = run_sft(_sft_cfg(dist_world, tmp_path / "bf16", save_every=10, bf16=True), quiet=True)
    assert summary["steps"] == 2
    fp32, bf16 = read_metrics(tmp_path / "fp32"), read_metrics(tmp_path / "bf16")
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in bf16)
    assert bf16[0]["loss"] != fp32[0]["loss"], "bf16 autocast did not change the arithmetic"
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=2e-2)
    assert read_summary(tmp_path / "bf16")["steps"] == 2
    # the exported model is float32 (autocast keeps float32 master weights)
    exported = load_file(str(tmp_path / "bf16" / "final" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in exported.values())


def test_opd_bf16_two_steps(dist_world, tmp_path):
    from listopd.train.opd import run_opd

    summary = run_opd(_opd_cfg(dist_world, tmp_path / "bf16", bf16=True, save_every=10), quiet=True)
    assert summary["steps"] == 2
    for r in read_metrics(tmp_path / "bf16"):
        for key in ("grad_norm", "adv_mean", "adv_std", "teacher_kl_k1", "teacher_kl_k3", "entropy"):
            assert math.isfinite(r[key]), (key, r)


def test_sft_student_from_a_subset_of_the_teachers_layers(world, tmp_path):
    """keep_layers: SFT starts from the teacher folder with only layers 0 and 2 (issue 17's student)."""
    import json

    from tiny_world import sft_config

    from listopd.train.models import load_model
    from listopd.train.sft import run_sft
    from listopd.util.errors import ListopdError

    cfg = sft_config(world, tmp_path / "run", model=world.teacher, tokenizer=None, keep_layers="0,2", steps=1,
                     save_every=1)
    run_sft(cfg, quiet=True)
    student = load_model(tmp_path / "run" / "final")
    assert student.config.num_hidden_layers == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["keep_layers"] == "0,2"
    with pytest.raises(ListopdError, match="keep_layers must be"):
        sft_config(world, tmp_path / "bad", model=world.teacher, keep_layers="0;2")


def test_sft_stops_at_its_sampled_parse_target_and_stays_stopped(dist_world, tmp_path, monkeypatch):
    """stop_at_sampled_parse: at each evaluation the SFT also validates one sample per task at T = 1 and stops once
    that rate reaches the target — checkpointed at the stopping step, and a re-run does not train further. The
    sampled rates are scripted (a tiny model at 2 steps keeps no format): 0.0, 0.05, then 0.25 ≥ 0.2."""
    from listopd.train.checkpoint import step_at_or_before
    from listopd.train.scaffold import TrainingRun
    from listopd.train.sft import run_sft

    real_validate, sampled_rates, calls = TrainingRun.validate, iter([0.0, 0.05, 0.25]), []

    def scripted(self, tokenizer, tasks, *, max_new_tokens, temperature=0.0):
        calls.append(temperature)
        if temperature == 0.0:
            return real_validate(self, tokenizer, tasks, max_new_tokens=max_new_tokens)
        return {"val_strict_parse_rate": next(sampled_rates)}

    monkeypatch.setattr(TrainingRun, "validate", scripted)
    cfg = _sft_cfg(dist_world, tmp_path / "warm", steps=20, eval_every=2, save_every=5, val_tasks=dist_world.tasks,
                   eval_tasks=2, max_new_tokens=4, stop_at_sampled_parse=0.2)
    summary = run_sft(cfg, quiet=True)
    assert summary["steps"] == 6 and summary["stop_reason"] == "sampled_parse"
    log = read_metrics(tmp_path / "warm")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r.get("val_sampled_strict_parse_rate") for r in log if r["step"] % 2 == 0] == [0.0, 0.05, 0.25]
    assert step_at_or_before(tmp_path / "warm", 20) == 6  # the stopping step is saved (save_every is 5)
    assert calls.count(1.0) == 3
    again = run_sft(cfg, quiet=True)  # resumes at step 6, already stopped: no further step, no further draw
    assert again["steps"] == 6 and again["stop_reason"] == "sampled_parse"
    assert len(read_metrics(tmp_path / "warm")) == 6 and calls.count(1.0) == 3


def test_sft_eval_greedy_off_runs_only_the_sampled_check(dist_world, tmp_path, monkeypatch):
    """eval_greedy false: each evaluation draws only the sampled check (no greedy decode), training is bitwise the
    run with greedy evaluations (neither touches the training RNG), and the summary still holds one greedy
    validation of the final weights."""
    from listopd.train.models import load_model
    from listopd.train.scaffold import TrainingRun
    from listopd.train.sft import run_sft
    from listopd.util.errors import ListopdError

    real_validate, calls = TrainingRun.validate, []

    def counted(self, tokenizer, tasks, *, max_new_tokens, temperature=0.0):
        calls.append(temperature)
        return real_validate(self, tokenizer, tasks, max_new_tokens=max_new_tokens, temperature=temperature)

    monkeypatch.setattr(TrainingRun, "validate", counted)
    runs = {}
    for greedy in (True, False):
        calls.clear()
        cfg = _sft_cfg(dist_world, tmp_path / f"g{greedy}", steps=6, eval_every=2, val_tasks=dist_world.tasks,
                       eval_tasks=2, max_new_tokens=4, stop_at_sampled_parse=1.0, eval_greedy=greedy)
        summary = run_sft(cfg, quiet=True)
        runs[greedy] = (list(calls), summary, read_metrics(tmp_path / f"g{greedy}"))
    assert runs[True][0] == [0.0, 1.0, 0.0, 1.0, 0.0]      # steps 2 and 4 greedy + sampled, then the final greedy
    assert runs[False][0] == [1.0, 1.0, 0.0]                # steps 2 and 4 sampled only, then the final greedy
    assert "val_strict_parse_rate" in runs[False][1]        # the summary's greedy numbers
    assert not any("val_strict_parse_rate" in r for r in runs[False][2])
    assert [r["loss"] for r in runs[True][2]] == [r["loss"] for r in runs[False][2]]
    a, b = (load_model(tmp_path / f"g{g}" / "final").state_dict() for g in (True, False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ListopdError, match="eval_greedy false"):
        _sft_cfg(dist_world, tmp_path / "x", eval_greedy=False, val_tasks=dist_world.tasks, eval_every=2).validate()


def test_sft_stop_at_sampled_parse_needs_validation(dist_world, tmp_path):
    from listopd.util.errors import ListopdError

    with pytest.raises(ListopdError, match="needs val_tasks"):
        _sft_cfg(dist_world, tmp_path / "x", stop_at_sampled_parse=0.2, eval_every=2).validate()
    with pytest.raises(ListopdError, match=r"in \(0, 1\]"):
        _sft_cfg(dist_world, tmp_path / "x", stop_at_sampled_parse=1.5, val_tasks=dist_world.tasks, eval_every=2).validate()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("bf16_sampling", [True, False])
def test_training_run_samples_under_autocast_or_in_float32(dist_world, tmp_path, bf16_sampling):
    """bf16_sampling=False: inside `run.sampling()` the student computes exactly what its float32 weights give
    without autocast; outside, and after the block, accelerate's autocast forward is the one the update uses."""
    import copy

    from listopd.train.models import load_model
    from listopd.train.scaffold import TrainingRun

    model = load_model(dist_world.student)
    float32 = copy.deepcopy(model).eval()
    run = TrainingRun(str(tmp_path / "run"), seed=0, threads=1, bf16=True, batch_size=1,
                      bf16_sampling=bf16_sampling)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    run.start(model, optimizer, None, config={}, start_step=0)
    run.unwrapped.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    reference, autocast = _logits(float32, ids), _logits(run.model, ids)
    assert not torch.equal(autocast, reference), "bf16 autocast did not change the arithmetic"
    with run.sampling() as sampler:
        assert sampler is run.unwrapped
        inside = _logits(sampler, ids)
    assert torch.equal(inside, autocast if bf16_sampling else reference)
    assert torch.equal(_logits(run.model, ids), autocast), "the update's autocast forward must come back"
    run.log_file.close()


@pytest.mark.parametrize("rollout_ahead, bf16_sampling", [(0, False), (1, False), (1, True)])
def test_bf16_runs_that_sample_in_float32_draw_the_float32_runs_first_rollout(dist_world, tmp_path, rollout_ahead,
                                                                              bf16_sampling):
    """Step 1 samples from the starting weights: a bf16 run that samples in float32 — the trainer with
    bf16_sampling=False, the rollout_ahead worker always (the student's copy reaches the worker process without
    accelerate's autocast forward) — draws the float32 run's rollout (same seed), so every rollout-only number of
    step 1 is equal; the teacher scores in bf16."""
    from listopd.train.opd import run_opd

    common = dict(save_every=10, max_new_tokens=24, rollout_ahead=rollout_ahead)
    run_opd(_opd_cfg(dist_world, tmp_path / "fp32", **common), quiet=True)
    summary = run_opd(_opd_cfg(dist_world, tmp_path / "bf16", bf16=True, bf16_sampling=bf16_sampling, **common),
                      quiet=True)
    assert summary["steps"] == 2
    fp32, bf16 = read_metrics(tmp_path / "fp32")[0], read_metrics(tmp_path / "bf16")[0]
    rollout_only = ("completion_len_mean", "completion_len_max", "eos_rate", "rollout_parse_rate")
    assert {k: bf16[k] for k in rollout_only} == {k: fp32[k] for k in rollout_only}
    assert bf16["teacher_kl_k3"] != fp32["teacher_kl_k3"], "the teacher scores in bf16 in the bf16 run"
