"""One-step-off-policy rollouts (`rollout_ahead: 1`): a worker process on its own core draws the next step's
rollout from the current weights and scores it under the frozen teacher and base, while the trainer updates on
this step's.

    step t:  trainer  take R_t ──► submit(prompts of t+1, θ_t) ──► loss on R_t, update θ_t → θ_{t+1}
             worker                  draw R_{t+1} from θ_t, score it under teacher and base ──►

The worker does everything a step needs that does not need the weights being updated (sampling from the
previous ones, and the frozen models' scoring with their prompt caches); the trainer keeps the student's forward
and backward. So R_t was drawn by θ_{t−1} and trained on by θ_t: one step stale (R_0, the first rollout, is drawn
from θ_0 and is on-policy). The loss corrects the staleness (core/loss.py, `rollout_is_cap`): the sampled
estimator weights each token by min(π_θ(y)/π_sampler(y), cap), truncated importance sampling as in verl; the
expected estimator needs no weight on the token, because it sums over the vocabulary under the current student
at each prefix. Neither reweights the prefix itself (its weight, a product of ratios over the earlier tokens, has
a variance that grows with the length), as in verl and SkyRL; the sampler→trainer KL and the weights are logged
so that the staleness can be seen.

The worker is a spawned process. It holds a copy of the student whose weights live in shared memory: `submit`
copies the trainer's weights in (a memcpy; the worker reads them only between a request and its result, the
trainer writes them only when no request is in flight). The teacher and the base are shared, not copied; their
prompt caches live in the worker. A sweep keeps one worker for all its runs (train/frozen_pool.py
`rollout_worker`, `attach` per run), so the caches stay full and the process starts once. Its random stream is
its own generator, whose state comes back with every rollout: a checkpoint stores the rollout in flight and
that state (`state`), a resumed run has the worker score that rollout again — the frozen scores of a rollout
are the same bits whether its prompts were cached or not (train/prompt_cache.py) — and continues bitwise as if
never stopped (`restore`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import queue
import time
import traceback
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp

from listopd.train.prompt_cache import prompt_cache
from listopd.train.rollout import (Rollout, completion_logprob_table, completion_logprobs, micro_batches,
                                   sample)
from listopd.util.errors import ListopdError
from listopd.util.processes import exit_with_parent

_POLL_S = 1.0  # how often a wait for the worker checks that its process is alive


@dataclass
class Scored:
    """A rollout and its micro-batches' frozen log-probs (sampled tokens, or [B, T, V] tables for the expected
    estimator; base None at λ = 1)."""
    rollout: Rollout
    teacher: list[torch.Tensor]
    base: list[torch.Tensor] | None


@dataclass(frozen=True)
class Scoring:
    """How the worker scores a rollout, as the trainer would (train/opd.py `listopd_step`)."""
    micro_batch_size: int
    tables: bool  # expected estimator: whole log-prob tables
    prompt_cache_mb: int
    bf16: bool


class RolloutAhead:
    """The worker process and the rollout it has in flight. `sampling`: keyword arguments of
    train.rollout.sample (max_new_tokens, eos_id, pad_id, temperature, top_p, top_k)."""

    def __init__(self, student, teacher, base, *, seed: int, scoring: Scoring, threads: int = 1, **sampling):
        self._shadow = copy.deepcopy(student).eval().requires_grad_(False)
        self._shadow.share_memory()
        for frozen in (teacher, base):
            if frozen is not None:
                frozen.share_memory()  # in place: the worker reads the trainer's own copy
        self._teacher_id, self._base_id, self._setup = id(teacher), id(base), (scoring, threads)  # for `fits`
        ctx = mp.get_context("spawn")  # fork would copy the trainer's thread pools and locks
        self._requests, self._results = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_serve, name="listopd-rollout-ahead", daemon=True,
                                    args=(self._shadow, teacher, base, scoring, self._requests, self._results,
                                          threads))
        self._process.start()
        self._in_flight = False
        self._held: tuple[Scored, torch.Tensor] | None = None  # a result taken early (for a checkpoint)
        self.attach(seed=seed, **sampling)

    def fits(self, student, teacher, base, scoring: Scoring, threads: int) -> bool:
        """Whether this worker can serve a run with these models and settings (the same frozen models, a
        student of the same shapes, the same scoring and threads) — or a run without a base, on a worker with one
        (it is then not scored under it)."""
        same_models = self._teacher_id == id(teacher) and (base is None or self._base_id == id(base))
        shapes = lambda m: [(n, p.shape, p.dtype) for n, p in m.named_parameters()]  # noqa: E731
        return (same_models and self._setup == (scoring, threads) and self._process.is_alive()
                and shapes(self._shadow) == shapes(student))

    def attach(self, *, seed: int, score_base: bool = True, **sampling) -> "RolloutAhead":
        """Start serving a run: its seed, whether its rollouts are scored under the base, and its sampling
        options; the worker's prompt caches are kept."""
        self._check_idle()
        self._seed, self._score_base, self._sampling = seed, score_base, sampling
        self._generator_state = None  # the worker's stream after its last rollout (None: start from the seed)
        self.wait_s = 0.0  # time the trainer spent waiting for the worker
        return self

    def submit(self, student, prompts: list[list[int]]) -> None:
        """Copy the student's current weights into the worker and have it draw one completion per prompt."""
        self._check_idle()
        with torch.no_grad():
            for dst, src in zip(self._shadow.parameters(), student.parameters(), strict=True):
                dst.copy_(src)
        self._requests.put(("draw", prompts, self._generator_state, self._seed, self._score_base, self._sampling))
        self._in_flight = True

    def take(self) -> Scored:
        """The rollout submitted last, scored (waiting for it)."""
        scored, self._generator_state = self._held or self._receive()
        self._held = None
        return scored

    def state(self) -> dict:
        """For a checkpoint: the rollout in flight (waited for, and held for the next `take`) and the worker's
        generator state after drawing it; with none in flight, the generator state alone (so that a run resumed
        with more steps continues the worker's stream instead of starting it again from the seed)."""
        if self._held is None and self._in_flight:
            self._held = self._receive()
        if self._held is None:
            return {} if self._generator_state is None else {"generator": self._generator_state}
        scored, generator_state = self._held
        return {"rollout": scored.rollout, "generator": generator_state}

    def restore(self, state: dict | None) -> bool:
        """Have the worker score a checkpoint's rollout in flight again, for the next `take`; False when the
        checkpoint holds none (its generator state, if any, is where the next draw starts)."""
        if not state:
            return False
        if "rollout" not in state:
            self._generator_state = state["generator"]
            return False
        self._check_idle()
        self._requests.put(("score", state["rollout"], state["generator"], self._seed, self._score_base,
                            self._sampling))
        self._in_flight = True
        return True

    def release(self) -> None:
        """End a run: drop the rollout in flight and anything held. The rollout in flight is waited for, so
        that the next run on this worker cannot receive it (a dead worker has nothing left to send)."""
        waited = self.wait_s  # the run's own waits, without this one
        if self._in_flight and self._process.is_alive():
            with contextlib.suppress(ListopdError):
                self._receive()
        self._in_flight, self._held, self.wait_s = False, None, waited

    def close(self) -> None:
        self.release()  # the worker can exit once its result is collected (its queue flushes)
        if self._process.is_alive():
            self._requests.put(None)
            self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def __enter__(self) -> "RolloutAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_idle(self) -> None:
        if self._in_flight or self._held is not None:
            raise RuntimeError("a rollout is already in flight")

    def _receive(self) -> tuple[Scored, torch.Tensor]:
        if not self._in_flight:
            raise RuntimeError("no rollout in flight")
        t0 = time.perf_counter()
        while True:
            try:
                result = self._results.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._process.is_alive():
                    raise ListopdError(f"the rollout-ahead worker process died (exit code {self._process.exitcode})")
        self.wait_s += time.perf_counter() - t0
        self._in_flight = False
        if isinstance(result, str):  # the worker's traceback
            raise ListopdError(f"the rollout-ahead worker failed:\n{result}")
        scored, generator_state = result
        return _own(scored), generator_state


def _own(scored: Scored) -> Scored:
    """A copy in this process's memory (a tensor received from a queue stays backed by the sender's shared
    memory segment, one file descriptor each)."""
    own = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
    rollout = Rollout(**{f.name: own(getattr(scored.rollout, f.name)) for f in dataclasses.fields(Rollout)})
    clone = lambda xs: None if xs is None else [own(x) for x in xs]  # noqa: E731
    return Scored(rollout, clone(scored.teacher), clone(scored.base))


def _serve(student, teacher, base, scoring: Scoring, requests, results, threads: int) -> None:
    """The worker process: draw (or take) a rollout and score it, per request, until a None arrives (or until the
    trainer's process is gone)."""
    exit_with_parent()
    torch.set_num_threads(threads)
    generator = torch.Generator(device=next(student.parameters()).device)  # sampling draws on the model's device
    caches = {id(m): prompt_cache(m, scoring.prompt_cache_mb) for m in (teacher, base) if m is not None}
    scorer = completion_logprob_table if scoring.tables else completion_logprobs
    device = next(teacher.parameters()).device.type
    autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if scoring.bf16 else contextlib.nullcontext

    def score(model, micro):
        with torch.no_grad(), autocast():
            return [scorer(model, m, prompt_cache=caches[id(model)]) for m in micro]

    while (request := requests.get()) is not None:
        kind, payload, generator_state, seed, score_base, sampling = request
        try:
            if generator_state is None:
                generator.manual_seed(seed)
            else:
                generator.set_state(generator_state)
            rollout = sample(student, payload, generator=generator, **sampling) if kind == "draw" else payload
            micro = micro_batches(rollout, scoring.micro_batch_size)
            scored = Scored(rollout, score(teacher, micro),
                            score(base, micro) if base is not None and score_base else None)
            results.put((scored, generator.get_state()))
        except Exception:  # noqa: BLE001 — the trainer re-raises it with the traceback
            results.put(traceback.format_exc())
