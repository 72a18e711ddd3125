"""The ListOPD and SFT trainers on real tiny Qwen3 models (see tiny_world.py for the set-up).

- λ = 1 is plain OPD: `run_opd` steps against a hand-written plain-OPD loop on the same rollouts
  (same generator seed, same data order), at the weight level (AdamW + clipping) and the gradient level;
- tokenizers that differ are refused before anything is written;
- a run interrupted after step 5 and resumed gives bitwise the weights of an uninterrupted run, with
  metrics.jsonl holding steps 1..N exactly once (OPD and SFT);
- the cliff guard: refusal above λ*(p, b, c), allow_above_cliff, calibration files, the guard_margin stop.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from listopd.train import checkpoint
from listopd.util.errors import ListopdError
from listopd.train.models import load_model
from listopd.train.opd import run_opd
from listopd.train.rollout import sample as real_sample
from listopd.train.sft import run_sft
from listopd.train.metrics_log import MetricsLog
from tiny_world import opd_config, sft_config


def read_metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


# --------------------------------------------------------------------------------------------- λ = 1

def plain_opd_reference(world, cfg, *, steps: int, make_opt):
    """Plain on-policy distillation written out by hand, independent of listopd.core.loss and of
    completion_logprobs: each sampled completion is scored by one unpadded full forward pass, and

        loss = −Σ_rows Σ_t (lp_teacher − lp_old)·lp_new / N,   lp_old = lp_new.detach(),  N = completion tokens

    then clip_grad_norm_(grad_clip) and the optimiser step. The rollout is reproduced with the trainer's
    generator seed (seed·1000 + rank 0) and data order (batch_indices)."""
    from listopd.task.tasks import read_tasks
    from listopd.task.prompts import encode_prompt
    from listopd.train.data_order import batch_indices

    tok = world.tok
    torch.manual_seed(cfg.seed)
    student, teacher = load_model(cfg.student), load_model(cfg.teacher)
    teacher.requires_grad_(False)
    tasks = read_tasks(cfg.tasks)
    prompts = [encode_prompt(t, tok) for t in tasks]
    named = dict(student.named_parameters())
    opt = make_opt(list(named.values()))
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + 0)
    rollouts, grads, norms, kl = [], [], [], []
    for step in range(steps):
        rows = batch_indices(len(tasks), cfg.batch_size, step, cfg.seed)
        roll = real_sample(student, [prompts[i] for i in rows], max_new_tokens=cfg.max_new_tokens,
                           eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=generator)
        rollouts.append(roll)
        student.train()
        opt.zero_grad(set_to_none=True)
        n_tokens = roll.completion_mask.sum()
        loss, log_ratio = 0.0, []
        for i, r in enumerate(rows):
            n = int(roll.completion_mask[i].sum())
            completion = roll.completion_ids[i, :n].tolist()
            seq = torch.tensor([prompts[r] + completion])
            at = torch.arange(len(prompts[r]) - 1, len(prompts[r]) - 1 + n)
            target = torch.tensor(completion)
            lp_new = torch.log_softmax(student(input_ids=seq).logits[0].float(), -1)[at, target]
            with torch.no_grad():
                lp_teacher = torch.log_softmax(teacher(input_ids=seq).logits[0].float(), -1)[at, target]
            advantage = (lp_teacher - lp_new.detach()).detach()
            loss = loss - (advantage * lp_new).sum()
            log_ratio.append(advantage)
        (loss / n_tokens).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(named.values()), cfg.grad_clip)))
        grads.append({k: p.grad.detach().clone() for k, p in named.items()})
        kl.append(float(-torch.cat(log_ratio).mean()))
        opt.step()
    return student, rollouts, grads, norms, kl


@pytest.fixture
def record_rollouts(monkeypatch):
    """The rollouts run_opd samples, in order."""
    seen = []

    def recording_sample(*args, **kwargs):
        roll = real_sample(*args, **kwargs)
        seen.append(roll)
        return roll

    monkeypatch.setattr("listopd.train.opd.sample", recording_sample)
    return seen


def _same_rollouts(trainer_rolls, reference_rolls):
    assert len(trainer_rolls) == len(reference_rolls)
    for a, b in zip(trainer_rolls, reference_rolls):
        assert torch.equal(a.input_ids, b.input_ids)
        assert torch.equal(a.completion_mask, b.completion_mask)


def test_lambda_one_matches_hand_written_plain_opd_weights(world, tmp_path, record_rollouts):
    """Two run_opd steps at λ = 1 (clip_mode none, AdamW, lr 1e-3, grad_clip 1) give the weights of the
    hand-written plain-OPD loop with the same optimiser settings and clipping, on identical rollouts.

    Not bitwise: the reference scores each row in its own unpadded forward pass, the trainer in padded
    micro-batches, so gradients differ by float round-off (~1e-7 relative, see the gradient test). Adam's
    steps divide by its first moment's scale, which turns that round-off into visible weight differences
    where the moment is itself small: |g| ~1e-8 at step 1, or g1 and g2 of opposite signs cancelling in
    step 2's moment (0.1·(0.9·g1 + g2); seen once in 400k weights on an AVX2 CPU: 0.9·g1 + g2 = 6e-6). So the
    tight tolerance applies where |g1| > 1e-5 and |0.9·g1 + g2| > 1e-5 (~80% of the weights) and a loose one
    (lr/10, an Adam step is ~lr) everywhere."""
    cfg = opd_config(world, tmp_path / "run", student=world.eos_student, steps=2, reward_scale=1.0,
                     clip_mode="none", lr=1e-3, grad_clip=1.0, save_every=1)
    run_opd(cfg, quiet=True)
    trained = dict(load_model(tmp_path / "run" / "final").named_parameters())

    def adamw(params):  # listopd.train.training.make_optimizer's settings, written out
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)

    reference, rolls, grads, norms, _ = plain_opd_reference(world, cfg, steps=cfg.steps, make_opt=adamw)
    _same_rollouts(record_rollouts, rolls)
    lengths = rolls[0].completion_mask.sum(1)
    assert lengths.min() < lengths.max()  # rows of different lengths: the mask and N matter
    assert min(norms) > cfg.grad_clip  # the clip binds: same clipping is part of what is compared
    initial = dict(load_model(world.eos_student).named_parameters())
    n_tight = n_all = 0
    for name, ref in reference.named_parameters():
        got, ref = trained[name].detach(), ref.detach()
        assert not torch.equal(ref, initial[name].detach()), name  # every tensor was updated
        g1, g2 = grads[0][name], grads[1][name]  # the clipped gradients each Adam step took
        tight = (g1.abs() > 1e-5) & ((0.9 * g1 + g2).abs() > 1e-5)
        torch.testing.assert_close(got[tight], ref[tight], atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(got, ref, atol=cfg.lr / 10, rtol=0, msg=name)
        n_tight, n_all = n_tight + int(tight.sum()), n_all + tight.numel()
    assert n_tight > 0.75 * n_all
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2]
    for m, n in zip(metrics, norms):
        assert m["grad_norm"] == pytest.approx(n, rel=1e-4)


class _Recorder:
    """make_optimizer replacement: plain SGD that records the (clipped) gradient it is asked to apply."""

    def __init__(self):
        self.grads = []

    def __call__(self, model, lr, weight_decay):
        names = {id(p): n for n, p in model.named_parameters()}
        params = [p for p in model.parameters() if p.requires_grad]
        grads = self.grads

        class RecordingSGD(torch.optim.SGD):
            def step(self, closure=None):
                grads.append({names[id(p)]: p.grad.detach().clone() for p in params})
                return super().step(closure)

        return RecordingSGD(params, lr=lr)


def test_lambda_one_gradient_is_the_plain_opd_gradient(world, tmp_path, monkeypatch, record_rollouts):
    """Gradient level, so that scale matters (Adam is invariant to it): the trainer's clipped gradient and
    its logged pre-clip norm equal the hand-written plain-OPD ones; at λ = 2 with the default base (the
    frozen warm start, equal to π_old at step 1) the advantage doubles, so the pre-clip norm doubles and
    the clipped gradient keeps its direction."""
    recorder = _Recorder()
    monkeypatch.setattr("listopd.train.opd.make_optimizer", recorder)
    cfg = opd_config(world, tmp_path / "l1", student=world.eos_student, steps=1, reward_scale=1.0,
                     clip_mode="none", lr=1e-3, grad_clip=0.05, batch_size=6, micro_batch_size=4)
    run_opd(cfg, quiet=True)
    _, rolls, grads, norms, kl = plain_opd_reference(
        world, cfg, steps=1, make_opt=lambda params: torch.optim.SGD(params, lr=cfg.lr))
    _same_rollouts(record_rollouts, rolls)
    assert norms[0] > cfg.grad_clip
    (got,) = recorder.grads
    scale = max(float(g.abs().max()) for g in grads[0].values())
    for name, g in grads[0].items():
        torch.testing.assert_close(got[name], g, atol=1e-5 * scale, rtol=1e-3, msg=name)
    (m,) = read_metrics(tmp_path / "l1")
    assert m["grad_norm"] == pytest.approx(norms[0], rel=1e-4)
    assert m["teacher_kl_k1"] == pytest.approx(kl[0], abs=1e-4)

    recorder.grads.clear()
    run_opd(opd_config(world, tmp_path / "l2", student=world.eos_student, steps=1, reward_scale=2.0,
                       clip_mode="none", lr=1e-3, grad_clip=0.05, batch_size=6, micro_batch_size=4), quiet=True)
    (m2,) = read_metrics(tmp_path / "l2")
    assert m2["grad_norm"] == pytest.approx(2 * norms[0], rel=1e-4)
    for name, g in recorder.grads[0].items():
        torch.testing.assert_close(g, got[name], atol=1e-5 * scale, rtol=1e-3, msg=name)


# --------------------------------------------------------------------------------------------- vocabulary

@pytest.fixture(scope="module")
def other_eos_teacher(world, tmp_path_factory):
    """The teacher with the same vocabulary but a different EOS id (the PAD token as EOS)."""
    import shutil

    from listopd.train.models import load_tokenizer

    folder = tmp_path_factory.mktemp("other_eos") / "teacher"
    shutil.copytree(world.teacher, folder)
    tok = load_tokenizer(world.teacher)
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("which", ["teacher_other_text", "teacher_other_eos", "base_other_text"])
def test_vocabulary_mismatch_refused_before_training(world, tmp_path, which, other_eos_teacher):
    out = tmp_path / "run"
    if which == "teacher_other_text":
        cfg, expect = opd_config(world, out, teacher=world.other_teacher), ("student and teacher", "vocabulary size")
    elif which == "teacher_other_eos":
        cfg, expect = opd_config(world, out, teacher=other_eos_teacher), ("student and teacher", "eos id")
    else:
        cfg = opd_config(world, out, base=world.other_teacher, reward_scale=1.5)
        expect = ("student and base", "vocabulary size")
    with pytest.raises(ListopdError) as e:
        run_opd(cfg, quiet=True)
    msg = str(e.value)
    assert "tokenizers differ" in msg and all(x in msg for x in expect), msg
    assert "\n" not in msg
    assert not out.exists()  # refused before anything was written or trained


def test_vocabulary_mismatch_through_cli(world, tmp_path, capsys):
    from listopd.cli import main

    out = tmp_path / "run"
    rc = main(["opd", "--student", world.student, "--teacher", world.other_teacher, "--tasks", world.train,
               "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "tokenizers differ" in err
    assert not out.exists()


# --------------------------------------------------------------------------------------------- resume

def crash_after_step(monkeypatch, step: int):
    """Make MetricsLog.write raise right after writing `step` (as if the process died there)."""
    real = MetricsLog.write

    def write(self, record):
        real(self, record)
        if record["step"] == step:
            raise RuntimeError(f"simulated crash after step {step}")

    monkeypatch.setattr(MetricsLog, "write", write)


def _comparable(records):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def _assert_resume_equals_uninterrupted(run_fn, cfg_clean, cfg_crash, monkeypatch, n_steps):
    """Uninterrupted run; then a run that dies right after step 5 (checkpoints at 2 and 4), then the same
    config again: it must resume from step 4 and end bitwise where the uninterrupted run ended."""
    clean_dir, crash_dir = Path(cfg_clean.out), Path(cfg_crash.out)
    run_fn(cfg_clean, quiet=True)

    crash_after_step(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="simulated crash after step 5"):
        run_fn(cfg_crash, quiet=True)
    monkeypatch.undo()
    assert [m["step"] for m in read_metrics(crash_dir)] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (crash_dir / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    assert not (crash_dir / "final").exists()

    # the same config again: resumes from the step-4 checkpoint and trains steps 5 and 6 only
    loaded, written = [], []
    real_load, real_write = checkpoint.load_checkpoint, MetricsLog.write
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda folder: (loaded.append(Path(folder).name), real_load(folder))[1])
    monkeypatch.setattr(MetricsLog, "write", lambda self, r: (written.append(r["step"]), real_write(self, r))[1])
    summary = run_fn(cfg_crash, quiet=True)
    monkeypatch.undo()
    assert loaded == ["step-0000004"] and written == [5, 6]
    assert summary["steps"] == n_steps
    clean_metrics, resumed_metrics = read_metrics(clean_dir), read_metrics(crash_dir)
    assert [m["step"] for m in resumed_metrics] == list(range(1, n_steps + 1))
    assert _comparable(resumed_metrics) == _comparable(clean_metrics)
    a, b = final_weights(clean_dir), final_weights(crash_dir)
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"
    assert json.loads((crash_dir / "summary.json").read_text())["steps"] == n_steps


def test_opd_resume_after_crash_is_bitwise_uninterrupted(world, tmp_path, monkeypatch):
    kw = dict(steps=6, save_every=2, lr=1e-3, val_tasks=world.val, eval_tasks=4)
    _assert_resume_equals_uninterrupted(run_opd, opd_config(world, tmp_path / "clean", **kw),
                                        opd_config(world, tmp_path / "crash", **kw), monkeypatch, 6)


def test_sft_resume_after_crash_is_bitwise_uninterrupted(world, tmp_path, monkeypatch):
    kw = dict(steps=6, save_every=2, warmup_steps=2, schedule="cosine")  # the LR schedule state matters
    _assert_resume_equals_uninterrupted(run_sft, sft_config(world, tmp_path / "clean", **kw),
                                        sft_config(world, tmp_path / "crash", **kw), monkeypatch, 6)


# --------------------------------------------------------------------------------------------- cliff guard

P, B, C = 0.95, 0.2, 5.0  # λ*(p, b, c) = 1.3812 < 1.5


def _lambda_star():
    from listopd.core.theory import lambda_star

    return float(lambda_star(P, B, C))


@pytest.fixture
def calibration(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"version": 1, "p": P, "b": B, "note": "measured on the warm start"}))
    return str(path)


@pytest.mark.parametrize("source", ["cliff_pb", "calibration"])
def test_cliff_refused_above_lambda_star(world, tmp_path, source, calibration):
    lam_star = _lambda_star()
    assert 1.0 < lam_star < 1.5
    extra = dict(cliff_p=P, cliff_b=B) if source == "cliff_pb" else dict(calibration=calibration)
    out = tmp_path / "run"
    cfg = opd_config(world, out, reward_scale=1.5, clip_strength=C, **extra)
    with pytest.raises(ListopdError) as e:
        run_opd(cfg, quiet=True)
    msg = str(e.value)
    assert "λ*" in msg and f"{lam_star:.4f}" in msg and "allow_above_cliff" in msg, msg
    assert not out.exists()


def test_cliff_check_below_and_other_clip_modes(world, tmp_path, calibration):
    from listopd.train.cliff import cliff_check

    lam_star = _lambda_star()
    below = cliff_check(opd_config(world, tmp_path, reward_scale=1.2, clip_strength=C, calibration=calibration))
    assert below["lambda_star"] == pytest.approx(lam_star) and (below["cliff_p"], below["cliff_b"]) == (P, B)
    # λ* is a statement about clip_mode teacher_ratio: other modes get a note, not a refusal
    other = cliff_check(opd_config(world, tmp_path, reward_scale=1.5, clip_strength=C, clip_mode="dual_clip",
                                   cliff_p=P, cliff_b=B))
    assert "cliff_note" in other and other["lambda_star"] == pytest.approx(lam_star)
    assert cliff_check(opd_config(world, tmp_path)) == {}


@pytest.mark.parametrize("source", ["cliff_pb", "calibration"])
def test_allow_above_cliff_starts(world, tmp_path, source, calibration):
    extra = dict(cliff_p=P, cliff_b=B) if source == "cliff_pb" else dict(calibration=calibration)
    out = tmp_path / "run"
    summary = run_opd(opd_config(world, out, reward_scale=1.5, clip_strength=C, allow_above_cliff=True,
                                 steps=1, max_new_tokens=4, **extra), quiet=True)
    assert summary["steps"] == 1 and summary["stop_reason"] == "steps"
    assert summary["lambda_star"] == pytest.approx(_lambda_star())
    config = json.loads((out / "config.json").read_text())
    assert config["cliff_check"]["lambda_star"] == pytest.approx(_lambda_star()) and config["allow_above_cliff"] is True
    assert config["cliff_p"] == extra.get("cliff_p") and config["calibration"] == extra.get("calibration")
    assert (out / "final" / "model.safetensors").is_file()
    # the run's config.json is a config again (`listopd opd --config <run>/config.json`): its record is set aside
    from listopd.train.opd_config import OPDConfig
    from listopd.util.config import config_from_dict, read_yaml

    again = config_from_dict(OPDConfig, read_yaml(str(out / "config.json")), source="config.json")
    assert dataclasses.asdict(again) == {k: v for k, v in config.items() if k != "cliff_check"}


def test_guard_margin_stop_checkpoints_and_summarises(world, tmp_path, monkeypatch):
    """The rollout parse rate (judged by the contract) is 1 for three steps, then 0. With window 2 and
    margin 0.5 the windowed rate goes 1, 1, 1, 0.5 (not *more* than 0.5 below the best), 0 → stop at 5."""
    from listopd.train.checkpoint import latest_checkpoint
    from listopd.task.contract import Kind, RankingContract, Verdict

    batch, calls = 4, []

    def check(self, text):
        calls.append(text)
        if len(calls) <= 3 * batch:
            return Verdict(Kind.OK, ranking=("A", "B", "C", "D"))
        return Verdict(Kind.NOT_JSON, position=0)

    monkeypatch.setattr(RankingContract, "check", check)
    out = tmp_path / "run"
    cfg = opd_config(world, out, steps=20, batch_size=batch, micro_batch_size=batch, guard_margin=0.5,
                     guard_window=2, save_every=100, max_new_tokens=4)
    summary = run_opd(cfg, quiet=True)
    assert summary["steps"] == 5
    assert summary["stop_reason"].startswith("cliff guard"), summary["stop_reason"]
    assert "0.000" in summary["stop_reason"] and "1.000" in summary["stop_reason"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["stop_reason"] == summary["stop_reason"] and on_disk["steps"] == 5
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert [m["rollout_parse_rate"] for m in metrics] == [1.0, 1.0, 1.0, 0.0, 0.0]
    folder, state = latest_checkpoint(out)
    assert folder.name == "step-0000005" and state["step"] == 5  # checkpointed at the stop (save_every=100)
    assert state["trainer"]["guard"] == {"best": 1.0, "best_step": 2, "history": [0.0, 0.0],
                                         "stopped": summary["stop_reason"]}
    assert summary["final_from_step"] is None  # no checkpoint at or before step 2 (save_every=100)
    assert len(list((out / "checkpoints").glob("step-*"))) == 1
    assert (out / "final" / "model.safetensors").is_file()
    # the same command again does not train on past the stop: it reports the stop
    again = run_opd(cfg, quiet=True)
    assert again["steps"] == 5 and again["stop_reason"] == summary["stop_reason"]
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4, 5]


def test_guard_exports_the_checkpoint_before_the_drop(world, tmp_path, monkeypatch):
    """Parse rate 1 for 3 steps, then 0: the guard (window 2, margin 0.5) fires at step 5; its best window
    ended at step 2, so final/ is step 2's checkpoint (kept past keep=2 for that reason), not step 5's model."""
    from safetensors.torch import load_file

    from listopd.task.contract import Kind, RankingContract, Verdict

    batch, calls = 4, []

    def check(self, text):
        calls.append(text)
        return Verdict(Kind.OK, ranking=("A", "B", "C", "D")) if len(calls) <= 3 * batch \
            else Verdict(Kind.NOT_JSON, position=0)

    monkeypatch.setattr(RankingContract, "check", check)
    out = tmp_path / "run"
    cfg = opd_config(world, out, steps=20, batch_size=batch, micro_batch_size=batch, guard_margin=0.5,
                     guard_window=2, save_every=1, max_new_tokens=4, lr=1e-2)
    summary = run_opd(cfg, quiet=True)
    assert summary["steps"] == 5 and summary["final_from_step"] == 2
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert kept == ["step-0000002", "step-0000004", "step-0000005"]
    final = load_file(str(out / "final" / "model.safetensors"))
    at2 = load_file(str(out / "checkpoints" / "step-0000002" / "model.safetensors"))
    at5 = load_file(str(out / "checkpoints" / "step-0000005" / "model.safetensors"))
    shared = [k for k in at2 if k in final]
    assert shared and all(torch.equal(final[k], at2[k]) for k in shared)
    assert any(not torch.equal(at2[k], at5[k]) for k in shared)  # the weights did move after step 2


def test_sft_loss_from_target_positions_equals_full_logits(world):
    """The SFT loss computes logits only from the earliest target on; its value and gradient equal the
    full-logits cross-entropy's (prompts of different lengths, right-padded)."""
    from listopd.train.sft import collate, encode_example, target_loss_sum

    model = load_model(world.teacher)
    examples = [encode_example(t, world.tok) for t in world.train_tasks[:4]]
    assert len({len(x) for x, _ in examples}) > 1  # the rows' targets start at different positions
    ids, labels, mask = collate(examples, world.tok.pad_token_id)

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    fast = target_loss_sum(model, ids, labels, mask)
    g_fast = grads(fast)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="sum")
    g_full = grads(full)
    assert torch.allclose(fast, full, rtol=1e-6, atol=1e-5)
    for a, b in zip(g_fast, g_full):  # float rounding only: the lm_head sums over fewer (all-masked) rows
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


# --------------------------------------------------------------------------------------------- end to end

def _target_loglik(model_dir, tasks, tok) -> float:
    """Mean log-likelihood per target token (target + EOS, teacher-forced) of a model on tasks."""
    from listopd.train.sft import collate, encode_example

    model = load_model(model_dir)
    ids, labels, mask = collate([encode_example(t, tok) for t in tasks], tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return -float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                    labels[:, 1:].reshape(-1), ignore_index=-100))


def _teacher_lp_of_student_samples(student_dir, teacher_dir, tasks, tok, seed=0) -> float:
    """Mean log π_T per completion token of completions sampled (T = 1) from the student on `tasks`."""
    from listopd.train.rollout import completion_logprobs
    from listopd.task.prompts import encode_prompt

    student, teacher = load_model(student_dir), load_model(teacher_dir)
    roll = real_sample(student, [encode_prompt(t, tok) for t in tasks], max_new_tokens=32,
                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                       generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        lp = completion_logprobs(teacher, roll)
    return float(lp.sum() / roll.completion_mask.sum())


@pytest.mark.slow
def test_end_to_end_sft_then_opd_lambda_one(tmp_path):
    """SFT a tiny-teacher (40 steps) and a weaker tiny-student warm start (10 steps) on an easy K=4 task
    (one history title), then 30 OPD steps at λ = 1 (lr 1e-3): the teacher's log-likelihood of the
    student's own samples rises (logged k1 estimate of KL(π_S‖π_T) falls, and measured directly on
    validation prompts), and the validation strict parse rate does not fall. ~90 s on one CPU thread.

    Note: at this budget neither model emits valid K=4 permutations under greedy decoding (the teacher's
    outputs are well-formed JSON with a repeated id), so the parse-rate check is 0 ≥ 0 here; the last
    check (mass on the contract-keeping class, position by position) is the one that can fail."""
    from listopd.task.data.synth import make_synth_tasks
    from listopd.train.opd_config import OPDConfig
    from listopd.train.sft_config import SFTConfig
    from listopd.task.tasks import write_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer

    tasks = make_synth_tasks(n_items=60, n_users=120, history_len=1, min_history=1, k=4, seed=0)
    train = [t for t in tasks if t.split == "train"]
    val = [t for t in tasks if t.split != "train"]  # validation + test users: 24 tasks
    write_tasks(tmp_path / "train.jsonl", train)
    write_tasks(tmp_path / "val.jsonl", val)
    tok = train_tokenizer(task_texts(tasks), vocab_size=1024)
    tok.save_pretrained(str(tmp_path / "tok"))
    common = dict(tasks=str(tmp_path / "train.jsonl"), tokenizer=str(tmp_path / "tok"), batch_size=8,
                  micro_batch_size=8, lr=3e-3, warmup_steps=5, eval_every=0, save_every=1000, max_new_tokens=32,
                  threads=1)
    teacher, warm = tmp_path / "teacher" / "final", tmp_path / "warm" / "final"
    run_sft(SFTConfig(out=str(tmp_path / "teacher"), model="tiny-teacher", steps=40, seed=0, **common),
            quiet=True)
    warm_summary = run_sft(SFTConfig(out=str(tmp_path / "warm"), model="tiny-student", steps=10, seed=1,
                                     val_tasks=str(tmp_path / "val.jsonl"), eval_tasks=len(val), **common),
                           quiet=True)
    teacher_ll, warm_ll = _target_loglik(teacher, val, tok), _target_loglik(warm, val, tok)

    summary = run_opd(OPDConfig(student=str(warm), teacher=str(teacher), tasks=str(tmp_path / "train.jsonl"),
                                val_tasks=str(tmp_path / "val.jsonl"), eval_tasks=len(val),
                                out=str(tmp_path / "opd"), reward_scale=1.0, steps=30, batch_size=8,
                                micro_batch_size=8, lr=1e-3, max_new_tokens=32, eval_every=0, save_every=1000,
                                seed=0, threads=1), quiet=True)
    opd = tmp_path / "opd" / "final"
    opd_ll = _target_loglik(opd, val, tok)
    before = _teacher_lp_of_student_samples(warm, teacher, val, tok)
    after = _teacher_lp_of_student_samples(opd, teacher, val, tok)
    k1 = [m["teacher_kl_k1"] for m in read_metrics(tmp_path / "opd")]
    first, last = sum(k1[:5]) / 5, sum(k1[-5:]) / 5
    print(f"\nval target log-lik/token: teacher {teacher_ll:.3f}, warm start {warm_ll:.3f}, after OPD {opd_ll:.3f}")
    print(f"teacher log-lik/token of student samples on val prompts: warm start {before:.3f}, after OPD {after:.3f}")
    print(f"logged teacher_kl_k1: first 5 steps {first:.3f}, last 5 steps {last:.3f}; "
          f"per step {[round(x, 2) for x in k1]}")
    print(f"val strict parse rate: warm start {warm_summary['val_strict_parse_rate']}, "
          f"after OPD {summary['val_strict_parse_rate']}")

    assert teacher_ll > warm_ll + 1.0  # the teacher is clearly better on the task
    assert summary["steps"] == 30 and summary["stop_reason"] == "steps"
    assert last < 0.9 * first  # the teacher likes the student's samples better (logged, on train prompts)
    assert after > before + 0.5  # ... and on held-out prompts
    assert summary["val_strict_parse_rate"] >= warm_summary["val_strict_parse_rate"]

    # Non-vacuous stand-in for the parse rate at this budget: the probability the student puts on the
    # contract-keeping class at every position of the reference outputs (calibration's per-position mass;
    # the strict parse rate of sampled outputs is the product of such masses along the output). Read with
    # the OPD student as "teacher" and the warm start as "warm start": p = after, b = before.
    from listopd.experiment.calibrate import calibrate

    cal = calibrate(load_model(opd), load_model(warm), tok, val, c=5.0, sources=("reference",), n_boot=10)
    tail_after = sum(1 - x.p for x in cal.positions) / len(cal.positions)
    tail_before = sum(1 - x.b for x in cal.positions) / len(cal.positions)
    print(f"mean mass off the contract-keeping class per position: warm start {tail_before:.4f}, "
          f"after OPD {tail_after:.4f}")
    assert tail_after <= tail_before


def test_cliff_check_with_the_full_vocabulary_predictor(world, tmp_path):
    from listopd.train.cliff import cliff_check

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"version": 1, "p": P, "b": B, "full_vocabulary": {"onset_lambda": 2.5}}))
    cfg = opd_config(world, tmp_path / "run", reward_scale=2.0, clip_strength=C, calibration=str(path),
                     cliff_predictor="full_vocabulary")
    info = cliff_check(cfg)  # above λ*(p, b, c) = 1.38, below the full-vocabulary onset: allowed
    assert info["full_vocabulary_onset"] == 2.5 and info["lambda_star"] == pytest.approx(_lambda_star())
    with pytest.raises(ListopdError, match="full-vocabulary predicted onset λ = 2.5"):
        cliff_check(opd_config(world, tmp_path / "run", reward_scale=2.5, clip_strength=C, calibration=str(path),
                               cliff_predictor="full_vocabulary"))
    path.write_text(json.dumps({"version": 1, "p": P, "b": B}))
    with pytest.raises(ListopdError, match="full_vocabulary.*recalibrate"):
        cliff_check(cfg)
    with pytest.raises(ListopdError, match="give calibration"):
        opd_config(world, tmp_path / "run", cliff_predictor="full_vocabulary")


def test_the_full_vocabulary_predictor_reads_the_table_of_the_run_s_objective(world, tmp_path):
    from listopd.train.cliff import cliff_check

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"version": 1, "p": P, "b": B, "full_vocabulary": {
        "onset_lambda": 2.5, "contract_aware": {"onset_lambda": None},
        "base_ratio_capped": {"c": C, "onset_lambda": 5.0}}}))

    def check(**kw):
        return cliff_check(opd_config(world, tmp_path / "run", reward_scale=3.0, clip_strength=C,
                                      calibration=str(path), cliff_predictor="full_vocabulary", **kw))

    with pytest.raises(ListopdError, match=r"full-vocabulary predicted onset λ = 2.5"):
        check()
    assert check(contract_aware=True)["full_vocabulary_table"] == "contract_aware"  # no onset on its grid
    info = check(clip_mode="base_ratio")
    assert info["full_vocabulary_onset"] == 5.0 and info["full_vocabulary_table"] == "base_ratio_capped"
    with pytest.raises(ListopdError, match=r"\(base_ratio rest point\) λ = 5"):
        cliff_check(opd_config(world, tmp_path / "run", reward_scale=5.0, clip_strength=C, clip_mode="base_ratio",
                               calibration=str(path), cliff_predictor="full_vocabulary"))
    with pytest.raises(ListopdError, match=r"computed at c = .*calibrate with --c 2"):
        cliff_check(opd_config(world, tmp_path / "run", reward_scale=1.5, clip_strength=2.0, clip_mode="base_ratio",
                               calibration=str(path), cliff_predictor="full_vocabulary"))
