"""scripts/likelihood_baseline.py: a text's log-probability after a prefix is the sum of its tokens' next-token
log-probs (checked one token at a time), and NDCG@1 reads the top-scored candidate's relevance."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("likelihood_baseline", ROOT / "scripts" / "likelihood_baseline.py")
likelihood_baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(likelihood_baseline)


def _task(relevance):
    from listopd.task.tasks import Candidate, Task

    return Task(id="t", context="a review", relevance=dict(zip("ABC", relevance)),
                candidates=tuple(Candidate(i, f"item {i}") for i in "ABC"[:len(relevance)]))


def test_ndcg1_reads_the_top_scored_candidate():
    assert likelihood_baseline.ndcg1([0.1, 2.0, -1.0], _task([0, 1, 0])) == 1.0
    assert likelihood_baseline.ndcg1([3.0, 2.0, -1.0], _task([0, 1, 0])) == 0.0
    assert likelihood_baseline.ndcg1([0.0, 1.0], _task([1, 2])) == 1.0
    assert likelihood_baseline.ndcg1([1.0, 0.0], _task([1, 2])) == 1 / 3


def test_text_logprob_is_the_sum_of_next_token_logprobs():
    from listopd.task.tokenizer import train_tokenizer
    from listopd.train.models import build_model

    texts = ["Review: soft and warm", "The review above is about: a wool scarf", "a cotton shirt"] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_model("tiny-student", tok).eval()
    prefix, text = "Review: soft and warm\n" + likelihood_baseline.CUE, "a wool scarf"
    p, t = tok.encode(prefix, add_special_tokens=False), tok.encode(" " + text, add_special_tokens=False)
    expected = 0.0
    with torch.no_grad():
        for i, token in enumerate(t):  # one token at a time, each after everything before it
            logits = model(input_ids=torch.tensor([p + t[:i]])).logits[0, -1].float()
            expected += float(torch.log_softmax(logits, -1)[token])
        assert likelihood_baseline.text_logprob(model, tok, prefix, text) == pytest.approx(expected, abs=1e-4)


def test_permuted_copies_move_relevance_with_the_item_and_reletter_in_order():
    spec = importlib.util.spec_from_file_location("permute_candidates", ROOT / "scripts" / "permute_candidates.py")
    permute = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(permute)
    from listopd.task.tasks import Candidate, Task

    task = Task(id="t1", context="a review", relevance={"A": 0.0, "B": 1.0, "C": 0.0},
                candidates=(Candidate("A", "red hat"), Candidate("B", "wool scarf"), Candidate("C", "blue shoe")))
    out = permute.copies([task], 6, seed=1)
    assert out[0] == task and [t.id for t in out[1:]] == [f"t1~perm{i}" for i in range(1, 6)]
    for t in out:
        assert t.candidate_ids == ("A", "B", "C")  # letters in prompt order, whatever the order of the items
        relevant = [c.text for c in t.candidates if t.relevance[c.id] == 1.0]
        assert relevant == ["wool scarf"]  # the relevance followed its item
    assert len({tuple(c.text for c in t.candidates) for t in out}) > 1  # the orders differ
