"""One-step-off-policy rollouts (`rollout_ahead: 1`, train/rollout_ahead.py), on the tiny world's models:

- the first step is on-policy (drawn from θ_0 with the synchronous trainer's seed): the synchronous run's
  rollout, and its update up to the importance weights' rounding (π_old/π_sampler = 1 ± 1e-6);
- later rollouts are one step stale: the sampler→trainer KL and the weights are logged, and they are the
  weights the loss applies (checked against a hand-computed truncated-IS loss in test_loss.py);
- an interrupted pipelined run resumes bitwise (the rollout in flight and the sampler's stream are checkpointed);
- the worker draws and scores as the trainer would; a worker that dies is reported, not waited for forever, and
  a trainer that is killed takes its worker with it.
"""

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from listopd.train import scaffold
from listopd.train.models import load_frozen, load_model
from listopd.train.opd import run_opd, trainer_threads
from listopd.train.rollout import completion_logprobs, micro_batches, sample
from listopd.train.rollout_ahead import RolloutAhead, Scoring
from listopd.util.errors import ListopdError
from test_trainer import _assert_resume_equals_uninterrupted
from killed_parent import helper_outlives_killed_parent, needs_proc
from tiny_world import opd_config


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_first_step_is_the_synchronous_step(world, tmp_path, monkeypatch):
    grads = {}
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):  # the clipped gradient the update uses
        grads[run] = torch.cat([p.grad.flatten() for group in self.param_groups for p in group["params"]])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    kw = dict(steps=1, reward_scale=1.5, lr=1e-3)
    for run, ahead in (("sync", 0), ("ahead", 1)):
        summary = run_opd(opd_config(world, tmp_path / run, rollout_ahead=ahead, **kw), quiet=True)
    sync, ahead = _metrics(tmp_path / "sync")[0], _metrics(tmp_path / "ahead")[0]
    # the same tokens were sampled (completion lengths and the per-token statistics agree)
    for key in ("completion_len_mean", "rollout_parse_rate", "eos_rate"):
        assert ahead[key] == sync[key], key
    assert ahead["teacher_kl_k3"] == pytest.approx(sync["teacher_kl_k3"], abs=1e-6)
    assert ahead["is_weight_mean"] == pytest.approx(1.0, abs=1e-5) and ahead["is_cap_frac"] == 0.0
    assert ahead["sampler_kl_k3"] < 1e-9
    # the gradient agrees to the weights' rounding (AdamW's first step, ~lr·sign(g), would amplify it where g ~ 0)
    torch.testing.assert_close(grads["ahead"], grads["sync"], atol=1e-5 * float(grads["sync"].abs().max()), rtol=0)
    assert summary["rollout_ahead"]["wait_s"] >= 0


@pytest.mark.parametrize("estimator", ["sampled", "expected"])
def test_later_rollouts_are_one_step_stale_and_weighted(world, tmp_path, estimator):
    """From step 2 on the rollout comes from the previous weights: the logged KL between sampler and trainer
    is positive, and the weights differ from 1 (lr 3e-3 makes each step move the student)."""
    cfg = opd_config(world, tmp_path / "ahead", steps=4, lr=3e-3, rollout_ahead=1, estimator=estimator,
                     reward_scale=1.5)
    run_opd(cfg, quiet=True)
    records = _metrics(tmp_path / "ahead")
    assert records[0]["sampler_kl_k3"] < 1e-9
    stale = records[1:]
    assert all(r["sampler_kl_k3"] > 1e-6 for r in stale)
    assert all(abs(r["is_weight_mean"] - 1.0) > 1e-5 for r in stale)
    assert all(0.0 <= r["is_cap_frac"] <= 1.0 for r in stale)


def test_pipelined_resume_after_crash_is_bitwise_uninterrupted(world, tmp_path, monkeypatch):
    kw = dict(steps=6, save_every=2, lr=1e-3, reward_scale=1.5, rollout_ahead=1)
    _assert_resume_equals_uninterrupted(run_opd, opd_config(world, tmp_path / "clean", **kw),
                                        opd_config(world, tmp_path / "crash", **kw), monkeypatch, 6)


def test_worker_draws_and_scores_what_the_trainer_would(world):
    """Given the trainer's weights and a seed, the worker returns the rollout `sample` draws here and the
    teacher's and base's scores of its micro-batches (from its prompt caches: the same bits as uncached)."""
    student, teacher = load_model(world.student), load_frozen(world.teacher)
    base = load_frozen(world.student)
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    kw = dict(max_new_tokens=6, eos_id=world.tok.eos_token_id, pad_id=world.tok.pad_token_id)
    scoring = Scoring(micro_batch_size=2, tables=False, prompt_cache_mb=64, bf16=False)
    with RolloutAhead(student, teacher, base, seed=7, scoring=scoring, **kw) as ahead:
        ahead.submit(student, prompts)
        got = ahead.take()
        assert set(ahead.state()) == {"generator"}  # nothing in flight: the stream's state alone
        ahead.restore({"rollout": got.rollout, "generator": torch.Generator().manual_seed(1).get_state()})
        again = ahead.take()  # the same rollout scored again (now from the worker's prompt cache)
    want = sample(student, prompts, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(got.rollout.input_ids, want.input_ids)
    assert torch.equal(got.rollout.sampler_logprobs, want.sampler_logprobs)
    micro = micro_batches(want, 2)
    with torch.no_grad():
        for scores, model in ((got.teacher, teacher), (got.base, base), (again.teacher, teacher)):
            for s, m in zip(scores, micro, strict=True):
                torch.testing.assert_close(s, completion_logprobs(model, m), atol=2e-5, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(got.teacher, again.teacher))


def test_a_dead_worker_is_reported(world):
    model = load_model(world.student)
    ahead = RolloutAhead(model, load_frozen(world.teacher), None, seed=0,
                         scoring=Scoring(micro_batch_size=2, tables=False, prompt_cache_mb=0, bf16=False),
                         max_new_tokens=4, eos_id=world.tok.eos_token_id, pad_id=world.tok.pad_token_id)
    try:
        ahead._process.kill()
        ahead._process.join()
        ahead.submit(model, [[5, 6, 7]])
        with pytest.raises(ListopdError, match="worker process died"):
            ahead.take()
    finally:
        ahead.close()


@needs_proc
def test_the_worker_exits_when_its_trainer_is_killed(world, tmp_path):
    # A trainer killed with SIGKILL (or SIGTERM, which skips the exit handlers that end daemon processes) sends its
    # worker no stop. The worker used to wait for its next request forever, holding its models' memory (2 GB,
    # still there 36 minutes after a demo was killed with pkill).
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(f"""
        import time
        from listopd.train.models import load_frozen, load_model
        from listopd.train.rollout_ahead import RolloutAhead, Scoring

        if __name__ == "__main__":  # (the worker is spawned: it imports this file)
            ahead = RolloutAhead(load_model({world.student!r}), load_frozen({world.teacher!r}), None, seed=0,
                                 scoring=Scoring(micro_batch_size=2, tables=False, prompt_cache_mb=0, bf16=False),
                                 max_new_tokens=4, eos_id={world.tok.eos_token_id}, pad_id={world.tok.pad_token_id})
            print(ahead._process.pid, flush=True)
            time.sleep(600)
    """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    assert not helper_outlives_killed_parent(trainer, env), "the rollout-ahead worker outlived its killed trainer"


@pytest.mark.parametrize("field, value, message", [("rollout_ahead", 2, "rollout_ahead must be 0 or 1"),
                                                    ("rollout_is_cap", 1.0, "rollout_is_cap must be")])
def test_bad_pipeline_options_are_refused(world, tmp_path, field, value, message):
    with pytest.raises(ListopdError, match=message):
        opd_config(world, tmp_path / "r", **{field: value})


def test_runs_on_one_pool_share_the_worker_and_train_as_they_would_alone(world, tmp_path):
    """A sweep's pipelined runs share the pool's worker (one process, its prompt caches kept), a λ = 1 run too
    (not scored under the base), and each trains to the same bits as the same run with a worker of its own."""
    from listopd.train.frozen_pool import FrozenPool

    kw = dict(steps=3, lr=3e-3, rollout_ahead=1)
    configs = [opd_config(world, tmp_path / f"pool_{lam}", reward_scale=lam, **kw) for lam in (1.5, 2.0, 1.0)]
    pool, workers = FrozenPool(), []
    try:
        for cfg in configs:
            run_opd(cfg, quiet=True, pool=pool)
            workers.append(pool._worker)
        assert workers[0] is workers[1] is workers[2] and workers[0]._process.is_alive()
    finally:
        pool.close()
    assert not workers[0]._process.is_alive()
    keys = ("loss", "grad_norm", "teacher_kl_k3", "rollout_parse_rate", "sampler_kl_k3", "is_weight_mean")
    for lam, cfg in zip((1.5, 2.0, 1.0), configs):
        alone = opd_config(world, tmp_path / f"alone_{lam}", reward_scale=lam, **kw)
        run_opd(alone, quiet=True)
        assert [[r.get(k) for k in keys] for r in _metrics(Path(cfg.out))] == \
            [[r.get(k) for k in keys] for r in _metrics(Path(alone.out))], lam


def test_a_worker_serves_only_runs_it_fits(world):
    student, teacher = load_model(world.student), load_frozen(world.teacher)
    scoring = Scoring(micro_batch_size=2, tables=False, prompt_cache_mb=0, bf16=False)
    with RolloutAhead(student, teacher, None, seed=0, scoring=scoring, max_new_tokens=4,
                      eos_id=world.tok.eos_token_id, pad_id=world.tok.pad_token_id) as ahead:
        assert ahead.fits(student, teacher, None, scoring, 1)
        assert not ahead.fits(student, teacher, load_frozen(world.student), scoring, 1)  # no base to score under
        assert not ahead.fits(student, load_frozen(world.teacher), None, scoring, 1)  # another teacher
        assert not ahead.fits(student, teacher, None, dataclasses.replace(scoring, tables=True), 1)
        assert not ahead.fits(student, teacher, None, scoring, 2)
        assert not ahead.fits(load_model(world.teacher), teacher, None, scoring, 1)  # other shapes


def test_a_checkpoint_with_nothing_in_flight_continues_the_worker_s_stream(world):
    """A run that ended (nothing in flight) and is resumed with more steps draws on from where the worker's
    stream stopped, not again from the seed."""
    student, teacher = load_model(world.student), load_frozen(world.teacher)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    kw = dict(max_new_tokens=6, eos_id=world.tok.eos_token_id, pad_id=world.tok.pad_token_id)
    scoring = Scoring(micro_batch_size=2, tables=False, prompt_cache_mb=0, bf16=False)
    with RolloutAhead(student, teacher, None, seed=7, scoring=scoring, **kw) as ahead:
        ahead.submit(student, prompts)
        first = ahead.take()
        state = ahead.state()
        ahead.submit(student, prompts)
        second = ahead.take()
    with RolloutAhead(student, teacher, None, seed=7, scoring=scoring, **kw) as resumed:
        assert resumed.restore(state) is False  # nothing to score again …
        resumed.submit(student, prompts)
        again = resumed.take()  # … and the draw continues the stream
    assert torch.equal(again.rollout.input_ids, second.rollout.input_ids)
    assert not torch.equal(second.rollout.sampler_logprobs, first.rollout.sampler_logprobs)


def test_the_trainer_leaves_the_worker_its_cores(world, tmp_path, monkeypatch):
    # threads 0 is torch's default, one per core: beside the worker's sampler_threads the trainer takes the
    # cores left (at least one); a thread count given explicitly, or no worker, is used as it is
    monkeypatch.setattr(scaffold, "DEFAULT_THREADS", 4)
    cfg = opd_config(world, tmp_path / "t", steps=1)
    assert trainer_threads(dataclasses.replace(cfg, threads=0, rollout_ahead=0)) == 0
    assert trainer_threads(dataclasses.replace(cfg, threads=0, rollout_ahead=1, sampler_threads=1)) == 3
    assert trainer_threads(dataclasses.replace(cfg, threads=0, rollout_ahead=1, sampler_threads=4)) == 1
    assert trainer_threads(dataclasses.replace(cfg, threads=2, rollout_ahead=1, sampler_threads=1)) == 2


def test_threads_0_is_torch_default_after_a_run_that_set_its_own(world, tmp_path):
    # in one process (a sweep) a run with an explicit thread count must not leave it to the next run's
    # "threads 0": that one gets torch's default for the process, as a run in a fresh process would
    from listopd.train.scaffold import TrainingRun

    TrainingRun(str(tmp_path / "a"), seed=0, threads=scaffold.DEFAULT_THREADS + 1, bf16=False, batch_size=1)
    assert torch.get_num_threads() == scaffold.DEFAULT_THREADS + 1
    TrainingRun(str(tmp_path / "b"), seed=0, threads=0, bf16=False, batch_size=1)
    assert torch.get_num_threads() == scaffold.DEFAULT_THREADS
