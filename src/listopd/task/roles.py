"""Structural roles of a contract-valid output, and the contract-keeping class at each of its positions.

Used by `listopd calibrate` (experiment/calibrate.py, which documents the rules: what keeps the contract, how
roles are named and numbered) and by the trainer's per-role instruments (train/role_mass.py), so that both
measure the very same classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLE_OF_CHAR = {"{": "open_brace", "}": "close_brace", "[": "open_bracket", "]": "close_bracket",
                ":": "colon", ",": "separator"}


def char_roles(text: str) -> list[tuple[str, int | None]]:
    """(role, id rank) of every character of a valid output; the rank (1..K) only on id characters."""
    out, in_string, strings_seen = [], False, 0
    for ch in text:
        if in_string:
            if ch == '"':
                out.append(("quote", None))
                in_string = False
            elif strings_seen == 1:
                out.append(("key", None))
            else:
                out.append(("id", strings_seen - 1))
        elif ch == '"':
            out.append(("quote", None))
            in_string = True
            strings_seen += 1
        elif ch in " \t\n\r":
            out.append(("whitespace", None))
        else:
            out.append((ROLE_OF_CHAR.get(ch, "other"), None))
    return out


def token_role(span: list[tuple[str, int | None]]) -> tuple[str, int | None]:
    """One label for a token's characters (whitespace counts only when there is nothing else), and the
    rank of the first id it touches."""
    roles = [r for r, _ in span]
    seen = [r for r in dict.fromkeys(roles) if r != "whitespace"] or ["whitespace"]
    rank = next((k for _, k in span if k is not None), None)
    return "+".join(seen), rank


def role_keys(role: str, id_rank: int | None) -> tuple[str, ...]:
    """The groups a position counts in: its role, and at an id position also its slot `id_<rank>`."""
    return (role,) if id_rank is None else (role, f"id_{id_rank}")


@dataclass
class VocabularyText:
    """Each token id's decoded text, and whether it can ever be part of a contract-valid output."""
    texts: list[str]
    usable: np.ndarray  # bool [V]
    eos_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer, width: int | None = None) -> "VocabularyText":
        n = width or len(tokenizer)
        special = set(tokenizer.all_special_ids)
        texts, usable = [], np.zeros(n, dtype=bool)
        for i in range(n):
            if i >= len(tokenizer) or i in special:
                texts.append("")
                continue
            t = tokenizer.decode([i], clean_up_tokenization_spaces=False)
            texts.append(t)
            usable[i] = bool(t) and "\ufffd" not in t
        return cls(texts, usable, tokenizer.eos_token_id)

    def keeping_mask(self, state) -> np.ndarray:
        """bool [V]: tokens whose text keeps the contract after the automaton state; EOS iff complete."""
        mask = state.viable_mask(self.texts) & self.usable
        mask[self.eos_id] = bool(state.accepting)
        return mask


def walk_output(contract, vocab: VocabularyText, tokenizer, output_ids: list[int]):
    """For each output token: (keeping mask, role, id rank). The output must be contract-valid."""
    full = tokenizer.decode(output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    roles = char_roles(full)
    steps, offset, state = [], 0, contract.start()
    for t, tok in enumerate(output_ids):
        mask = vocab.keeping_mask(state)
        if tok == vocab.eos_id:
            role, rank = "eos", None
        else:
            piece = vocab.texts[tok]
            role, rank = token_role(roles[offset:offset + len(piece)])
            offset += len(piece)
            state = state.feed(piece)
            if state is None:
                raise ValueError(f"output is not contract-valid at token {t}: {full!r}")
        steps.append((mask, role, rank))
    return steps
