"""Which tokens keep the output contract at each sampled prefix of a rollout — the mask contract-aware
extrapolation needs (OPD option `contract_aware`; core/loss.py): the same keeping classes `listopd calibrate`
measures (task/roles.py), from the contract automaton, whose masks are cached per automaton state (states are
shared by every task over the same ids, so after the first steps a mask costs a dictionary lookup).

A prefix that has already broken the contract has no keeping token: every token there gets λ = 1.
"""

from __future__ import annotations

import numpy as np
import torch

from listopd.task.roles import VocabularyText


class KeepingMasks:
    def __init__(self, tokenizer, width: int):
        self.vocab = VocabularyText.from_tokenizer(tokenizer, width=width)
        self.width = width

    def __call__(self, contracts, completion_ids: torch.Tensor, completion_mask: torch.Tensor, *,
                 full: bool) -> torch.Tensor:
        """bool [B, T, V] (full: every vocabulary entry) or [B, T] (the sampled token) — True where the token
        keeps row i's contract after its sampled prefix."""
        ids, live = completion_ids.cpu().numpy(), completion_mask.cpu().numpy() > 0
        b, t = ids.shape
        out = np.zeros((b, t, self.width) if full else (b, t), dtype=bool)
        for i, contract in enumerate(contracts):
            state = contract.start()
            for j in range(t):
                if not live[i, j] or state is None:
                    break
                mask = self.vocab.keeping_mask(state)
                tok = int(ids[i, j])
                out[i, j] = mask if full else mask[tok]
                state = None if tok == self.vocab.eos_id else state.feed(self.vocab.texts[tok])
        return torch.from_numpy(out).to(completion_ids.device)
