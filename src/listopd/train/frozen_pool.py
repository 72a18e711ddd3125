"""Frozen models loaded once per process and shared, with their prompt caches, by every ListOPD run in it:
a sweep's runs score under the same teacher and base, so the second run on starts with a full prompt cache
instead of loading the models and refilling it (a cached prompt scores the same bits as a new one:
train/prompt_cache.py)."""

from __future__ import annotations

from pathlib import Path

from listopd.train.models import load_frozen
from listopd.train.prompt_cache import PromptCache, cacheable


class FrozenPool:
    def __init__(self):
        self._models: dict[tuple, object] = {}
        self._caches: dict[tuple, PromptCache] = {}

    def model(self, path: str, dtype, device):
        """The frozen model at `path` (a folder, or a preset name) in `dtype` on `device`, loaded on first use."""
        key = (str(Path(path).resolve()) if Path(path).exists() else path, str(dtype), str(device))
        if key not in self._models:
            self._models[key] = load_frozen(path, dtype).to(device)
        return self._models[key]

    def cache(self, model, budget_mb: int) -> PromptCache | None:
        """The model's prompt cache (None: budget 0, or a model the cache does not support)."""
        if model is None or not budget_mb or not cacheable(model):
            return None
        key = (id(model), budget_mb)
        if key not in self._caches:
            self._caches[key] = PromptCache(model, budget_mb)
        return self._caches[key]
