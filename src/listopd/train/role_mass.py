"""The student's contract-keeping mass per structural role during training — the instrument that tells "tracks
the fixed point below λ*, leaves it above" from "the update blows up" (docs/method.md#the-fixed-point-each-mode-implies).

Measured exactly as `listopd calibrate` measures the warm start (the same roles and keeping classes,
task/roles.py; the same aggregate, keep_role = 1 − mean tail over the role's positions): teacher-forced along
the reference outputs of the first `n` validation tasks. The trainer logs it at every evaluation as
`keep/<role>` (and `keep/id_<k>` per id slot); `listopd report` draws it against q_λ(p_role, b_role) and the
clip-safe boundary from the calibration file.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from listopd.task.contract import RankingContract
from listopd.task.prompts import encode_prompt, target_text
from listopd.task.roles import VocabularyText, role_keys, walk_output


def next_token_probs(model, prompt_ids: list[int], output_ids: list[int], *, log: bool = False) -> np.ndarray:
    """[len(output), V] next-token probabilities (or, with log=True, log-probabilities: finite where the
    probability underflows) at each output position (teacher-forced), float64."""
    ids = torch.tensor([prompt_ids + output_ids[:-1]], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=len(output_ids)).logits[0].double()
    return (torch.log_softmax(logits, dim=-1) if log else torch.softmax(logits, dim=-1)).cpu().numpy()


class RoleProbe:
    """Keeping mass per role of a model on fixed validation prefixes (walked once, at construction)."""

    def __init__(self, tokenizer, tasks, width: int):
        vocab = VocabularyText.from_tokenizer(tokenizer, width=width)
        self.items = []
        for task in tasks:
            out_ids = tokenizer.encode(target_text(task), add_special_tokens=False) + [tokenizer.eos_token_id]
            steps = walk_output(RankingContract.for_task(task), vocab, tokenizer, out_ids)
            self.items.append((encode_prompt(task, tokenizer), out_ids, steps))

    def measure(self, model) -> dict[str, float]:
        """{"keep/<role>": 1 − mean tail mass over the role's positions} ({} without tasks)."""
        tails = defaultdict(list)
        was_training = model.training
        model.eval()
        for prompt, out_ids, steps in self.items:
            probs = next_token_probs(model, prompt, out_ids)
            for t, (mask, role, rank) in enumerate(steps):
                tail = 1.0 - float(probs[t, :len(mask)][mask].sum())
                for key in role_keys(role, rank):
                    tails[key].append(tail)
        model.train(was_training)
        return {f"keep/{role}": 1.0 - float(np.mean(v)) for role, v in sorted(tails.items())}
