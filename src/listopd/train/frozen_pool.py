"""Frozen models loaded once per process and shared, with their prompt caches, by every ListOPD run in it:
a sweep's runs score under the same teacher and base, so the second run on starts with a full prompt cache
instead of loading the models and refilling it (a cached prompt scores the same bits as a new one:
train/prompt_cache.py). With `rollout_ahead: 1` the pool also keeps the worker process, whose own prompt caches
then stay full from run to run (train/rollout_ahead.py)."""

from __future__ import annotations

from pathlib import Path

from listopd.train.models import load_frozen
from listopd.train.prompt_cache import PromptCache, prompt_cache
from listopd.train.rollout_ahead import RolloutAhead, Scoring


class FrozenPool:
    def __init__(self):
        self._models: dict[tuple, object] = {}
        self._caches: dict[tuple, PromptCache] = {}
        self._worker: RolloutAhead | None = None

    def model(self, path: str, dtype, device):
        """The frozen model at `path` (a folder, or a preset name) in `dtype` on `device`, loaded on first use."""
        key = (str(Path(path).resolve()) if Path(path).exists() else path, str(dtype), str(device))
        if key not in self._models:
            self._models[key] = load_frozen(path, dtype).to(device)
        return self._models[key]

    def cache(self, model, budget_mb: int) -> PromptCache | None:
        """The model's prompt cache (None: budget 0, or a model the cache does not support)."""
        key = (id(model), budget_mb)
        if key not in self._caches:
            self._caches[key] = prompt_cache(model, budget_mb)
        return self._caches[key]

    def rollout_worker(self, student, teacher, base, *, seed: int, scoring: Scoring, threads: int,
                       **sampling) -> RolloutAhead:
        """The rollout-ahead worker attached to a new run: the pool's own where it fits (RolloutAhead.fits),
        else a new one (the old one closed). A run without a base is served by a worker with one."""
        if self._worker is not None and not self._worker.fits(student, teacher, base, scoring, threads):
            self.close()
        if self._worker is None:
            self._worker = RolloutAhead(student, teacher, base, seed=seed, scoring=scoring, threads=threads,
                                        **sampling)
            return self._worker
        return self._worker.attach(seed=seed, score_base=base is not None, **sampling)

    def close(self) -> None:
        """Stop the worker process, if any (the models stay loaded)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
