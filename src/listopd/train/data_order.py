"""The data order of both trainers, a pure function of (seed, step): step s takes rows [s·B, (s+1)·B) of a
seeded permutation of the training tasks, re-shuffled every epoch. So a resumed run sees exactly the batches an
uninterrupted run would have seen, with nothing to save. Under several processes, rank r takes every
world-th row of the global batch."""

from __future__ import annotations

import numpy as np


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of step `step`: a slice of the seeded permutation of its epoch."""
    out = []
    start = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_items)
        perm = np.random.default_rng([seed, epoch]).permutation(n_items)
        take = min(batch_size - len(out), n_items - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
    return out


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    return indices[rank::world]
