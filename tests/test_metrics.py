"""Metrics against hand-computed values; bootstrap intervals; the outputs file."""

import json
import math

import numpy as np
import pytest

from listopd.util.errors import InputError
from listopd.task.metrics import (bootstrap_ci, ndcg_at_k, read_outputs, recall_at_k, reciprocal_rank, relevant_ids,
                             score)
from listopd.task.tasks import Candidate, Task

L3 = math.log2(3)  # the discount of rank 2


def task(tid, rel):
    return Task(id=tid, context="c", candidates=tuple(Candidate(x, x.lower()) for x in "ABC"), relevance=rel,
                split="test")


# Five tasks over ids A, B, C, with what the output is and how it scores (k = 2).
TASKS = [
    task("t1", {"A": 0, "B": 2, "C": 1}),  # valid ["C","B","A"]
    task("t2", {"A": 1, "B": 0, "C": 0}),  # "oops": not_json, repair finds nothing -> 0 everywhere
    task("t3", {"A": 1, "B": 0, "C": 3}),  # truncated; repaired to ["A","C","B"]
    task("t4", {"A": 0, "B": 1, "C": 0}),  # duplicate_id; repaired to ["A","B","C"]
    task("t5", {"A": 0, "B": 0, "C": 0}),  # valid, but nothing is relevant -> 0 everywhere
]
OUTPUTS = {
    "t1": '{"ranking": ["C", "B", "A"]}',
    "t2": "oops",
    "t3": '{"ranking": ["A", "C"',
    "t4": '{"ranking": ["A", "A", "B"]}',
    "t5": '{"ranking": ["A", "B", "C"]}',
}
# Per task (gain 2^g - 1, discount log2(rank + 1)):
# t1 [C,B,A] grades 1,2,0: NDCG@1 = (2^1-1)/(2^2-1) = 1/3
#    NDCG@2 = (1 + 3/log2 3) / (3 + 1/log2 3);  relevant (g>0) = {B,C}: recall@2 = 2/2 = 1, MRR = 1/1
# t3 repaired [A,C,B] grades 1,3,0: NDCG@1 = 1/7, NDCG@2 = (1 + 7/log2 3) / (7 + 1/log2 3);
#    relevant {A,C}: recall@2 = 1, MRR = 1
# t4 repaired [A,B,C] grades 0,1,0: NDCG@1 = 0, NDCG@2 = (1/log2 3) / 1; relevant {B}: recall@2 = 1, MRR = 1/2
# t2 (no repair) and t5 (IDCG = 0): 0 on every metric.
T1_NDCG2 = (1 + 3 / L3) / (3 + 1 / L3)
T3_NDCG2 = (1 + 7 / L3) / (7 + 1 / L3)
T4_NDCG2 = 1 / L3


def test_single_ranking_metrics():
    rel = TASKS[0].relevance
    assert ndcg_at_k(["C", "B", "A"], rel, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(["C", "B", "A"], rel, 2) == pytest.approx(T1_NDCG2)
    assert ndcg_at_k(["B", "C", "A"], rel, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["C", "B", "A"], rel, 99) == pytest.approx(T1_NDCG2)  # A adds gain 0
    assert ndcg_at_k(["A", "B", "C"], {"A": 0, "B": 0, "C": 0}, 3) == 0.0
    assert relevant_ids(rel) == {"B", "C"} and relevant_ids(rel, "max") == {"B"}
    assert recall_at_k(["C", "B", "A"], {"B", "C"}, 1) == 0.5
    assert recall_at_k(["C", "B", "A"], {"B"}, 1) == 0.0
    assert reciprocal_rank(["C", "B", "A"], {"B"}) == 0.5 and reciprocal_rank(["A"], set()) == 0.0
    with pytest.raises(ValueError):
        relevant_ids(rel, "some")


def test_score_matches_hand_computation():
    r = score(TASKS, OUTPUTS, k=2, n_boot=200)
    assert r["n"] == 5 and r["n_parsed"] == 2 and r["k"] == 2 and r["n_no_relevant"] == 1
    assert r["failure_kinds"] == {"ok": 2, "truncated": 1, "not_json": 1, "wrong_shape": 0, "unknown_id": 0,
                                  "duplicate_id": 1, "missing_id": 0, "trailing_text": 0}
    expected = {
        "strict_parse_rate": 2 / 5,
        "repair_rate": 4 / 5,
        # parsed: mean over t1 and t5
        "ndcg@1_parsed": (1 / 3 + 0) / 2,
        "ndcg@2_parsed": (T1_NDCG2 + 0) / 2,
        "recall@2_parsed": (1 + 0) / 2,
        "mrr_parsed": (1 + 0) / 2,
        # strict: mean over all five, invalid = 0
        "ndcg@1_strict": (1 / 3) / 5,
        "ndcg@2_strict": T1_NDCG2 / 5,
        "recall@2_strict": 1 / 5,
        "mrr_strict": 1 / 5,
        # repaired: t1 + t3 + t4 (t2 unrepairable, t5 irrelevant)
        "ndcg@1_repaired": (1 / 3 + 1 / 7 + 0) / 5,
        "ndcg@2_repaired": (T1_NDCG2 + T3_NDCG2 + T4_NDCG2) / 5,
        "recall@2_repaired": (1 + 1 + 1) / 5,
        "mrr_repaired": (1 + 1 + 1 / 2) / 5,
    }
    for name, value in expected.items():
        assert r[name] == pytest.approx(value), name
        lo, hi = r[name + "_ci"]
        assert lo <= r[name] <= hi, name
    json.dumps(r)  # JSON-ready


def test_relevant_max_changes_recall_and_mrr_only():
    r = score(TASKS, OUTPUTS, k=1, relevant="max", n_boot=50)
    # t1: only B (grade 2) is relevant; [C,B,A]: recall@1 = 0, MRR = 1/2
    assert r["recall@1_parsed"] == pytest.approx(0.0)
    assert r["mrr_parsed"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["ndcg@1_parsed"] == pytest.approx(1 / 6)


def test_outputs_as_aligned_list_and_no_valid_output():
    outs = [OUTPUTS[t.id] for t in TASKS]
    assert score(TASKS, outs, n_boot=20)["ndcg@1_strict"] == score(TASKS, OUTPUTS, n_boot=20)["ndcg@1_strict"]
    r = score(TASKS[:2], ["x", "y"], n_boot=20)
    assert r["strict_parse_rate"] == 0 and r["ndcg@1_parsed"] is None and r["ndcg@1_parsed_ci"] is None
    with pytest.raises(InputError, match="no output for 1 of 2 tasks"):
        score(TASKS[:2], {"t1": "x"})
    with pytest.raises(InputError, match="1 outputs for 2 tasks"):
        score(TASKS[:2], ["x"])


def test_bootstrap_ci():
    rng = np.random.default_rng(1)
    x = rng.random(300)
    lo, hi = bootstrap_ci(x, n_boot=1000, seed=3)
    assert lo < x.mean() < hi and hi - lo < 0.15
    assert bootstrap_ci(x, n_boot=1000, seed=3) == (lo, hi)  # seeded
    assert bootstrap_ci(x, n_boot=1000, seed=4) != (lo, hi)
    # the textbook width: about 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(len(x)), rel=0.2)
    assert bootstrap_ci(np.full(10, 0.5), n_boot=100) == (0.5, 0.5)
    # masked mean (the "parsed" variant) and several metrics at once on the same resamples
    mask = x > 0.5
    lo2, hi2 = bootstrap_ci(np.vstack([x, x]), np.vstack([mask, np.ones_like(mask)]), n_boot=500)
    assert lo2[0] < x[mask].mean() < hi2[0] and lo2[1] < x.mean() < hi2[1]
    assert np.isnan(bootstrap_ci(x, np.zeros_like(mask), n_boot=10)[0])


def test_bootstrap_is_vectorised_enough():
    import time
    x = np.random.default_rng(0).random((14, 5000))
    t0 = time.perf_counter()
    bootstrap_ci(x, n_boot=1000)
    assert time.perf_counter() - t0 < 5


def _write(tmp_path, lines, name="outputs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(p)


def test_read_outputs(tmp_path):
    good = [{"id": t.id, "output": OUTPUTS[t.id], "lambda": 1.2} for t in TASKS]
    assert read_outputs(_write(tmp_path, good), TASKS) == OUTPUTS
    cases = [
        (good[:4], "no output for 1 of 5 tasks ('t5')"),
        (good + [{"id": "t9", "output": ""}], ":6: field 'id': no task has id 't9'"),
        (good + [good[0]], ":6: field 'id': second output for task 't1' (first on line 1)"),
        ([{"id": "t1"}] + good[1:], ":1: field 'output': missing"),
        ([{"id": "t1", "output": None}] + good[1:], ":1: field 'output': must be a string"),
        ([{"output": "x"}] + good[1:], ":1: field 'id': missing"),
        (good[:2] + ["{bad"] + good[2:], ":3: not JSON"),
        (["[1]"] + good, ":1: a record must be a JSON object"),
        ([], "empty file"),
    ]
    for lines, message in cases:
        path = _write(tmp_path, lines)
        with pytest.raises(InputError) as e:
            read_outputs(path, TASKS)
        assert str(e.value).startswith(path) and message in str(e.value), str(e.value)
