"""Scoring model outputs on listwise tasks: strict validity, NDCG, recall, MRR, with bootstrap intervals.

Per task, the output is judged by the task's RankingContract (listopd.task.contract). Each ranking metric is
reported three ways, with the strict parse rate beside them:
    _parsed    mean over the strictly valid outputs only (n_parsed of them; None when there are none)
    _strict    mean over all tasks, an invalid output scoring 0
    _repaired  mean over all tasks after RankingContract.repair (a valid output is its own repair; an
               output repair cannot use scores 0)

Definitions (ranking r_1..r_K, grade g(id) from the task's relevance):
    NDCG@k    DCG@k / IDCG@k with DCG@k = sum_{i<=min(k,K)} (2**g(r_i) - 1) / log2(i + 1), IDCG@k the DCG@k of
              the ids sorted by grade; 0 when IDCG@k = 0 (a task with all grades 0).
    relevant  relevant="positive" (default): grade > 0, the trec_eval convention, which for one-positive
              leave-last-out tasks is "the held-out item"; relevant="max": grade equal to the task's
              highest grade, when that is > 0 (for dense graded labels where most grades are > 0).
    recall@k  |relevant ids among r_1..r_min(k,K)| / |relevant ids|; 0 when no id is relevant.
    MRR       1 / (rank of the first relevant id in the whole list); 0 when no id is relevant.
n_no_relevant counts the tasks with no relevant id (they score 0 on every metric, whatever the output).

Intervals: percentile bootstrap over tasks (seeded numpy Generator, n_boot resamples, default 1000, 95%),
all metrics on the same resamples; a _parsed mean is re-taken over the valid outputs inside each resample.

Outputs file: JSONL, one record per task, {"id": "<task id>", "output": "<raw generated text>"}; other fields
are ignored. A missing output, an output for an unknown task id, a repeated id and a record without a
string "output" are errors (InputError naming file, line and field).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from listopd.task.contract import KINDS, Kind, RankingContract
from listopd.util.errors import InputError
from listopd.task.tasks import Task
from listopd.util.jsonl import iter_jsonl

RELEVANT_RULES = ("positive", "max")
VARIANTS = ("parsed", "strict", "repaired")


# ------------------------------------------------------------------------------------------ per ranking

def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    """Graded NDCG@k (gain 2**g - 1, discount log2(rank + 1)); 0 when the ideal DCG is 0."""
    def dcg(grades):
        return sum((2.0 ** g - 1.0) / math.log2(i + 2) for i, g in enumerate(grades[:k]))
    ideal = dcg(sorted(relevance.values(), reverse=True))
    return dcg([relevance[i] for i in ranking]) / ideal if ideal > 0 else 0.0


def relevant_ids(relevance: Mapping[str, float], rule: str = "positive") -> set[str]:
    if rule not in RELEVANT_RULES:
        raise ValueError(f"relevant must be one of {RELEVANT_RULES}, got {rule!r}")
    top = max(relevance.values(), default=0)
    if rule == "max":
        return {i for i, g in relevance.items() if g == top and g > 0}
    return {i for i, g in relevance.items() if g > 0}


def recall_at_k(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranking: Sequence[str], relevant: set[str]) -> float:
    for i, x in enumerate(ranking):
        if x in relevant:
            return 1.0 / (i + 1)
    return 0.0


def ranking_metrics(ranking: Sequence[str], task: Task, k: int, relevant: str = "positive") -> dict[str, float]:
    """{"ndcg@1", "ndcg@k", "recall@k", "mrr"} for one full ranking of one task (key names literal)."""
    rel = relevant_ids(task.relevance, relevant)
    return {
        "ndcg@1": ndcg_at_k(ranking, task.relevance, 1),
        "ndcg@k": ndcg_at_k(ranking, task.relevance, k),
        "recall@k": recall_at_k(ranking, rel, k),
        "mrr": reciprocal_rank(ranking, rel),
    }


# ---------------------------------------------------------------------------------------------- bootstrap

def bootstrap_ci(values, mask=None, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95):
    """Percentile bootstrap interval of the mean of `values` over the tasks where `mask` is True.

    values: shape (n,) or (m, n) (m metrics on the same resamples); mask: same shape, bool, default all.
    Returns (lo, hi) arrays of shape (m,) (or floats for 1-d input); NaN where a resample-mean is undefined
    in every resample (e.g. no valid output at all)."""
    values = np.asarray(values, dtype=float)
    one_d = values.ndim == 1
    values = np.atleast_2d(values)
    mask = np.ones_like(values, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    mask = np.broadcast_to(mask, values.shape)
    m, n = values.shape
    if n == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    sums_src = np.where(mask, values, 0.0).T  # (n, m)
    counts_src = mask.T.astype(float)
    means = np.empty((n_boot, m))
    chunk = max(1, min(n_boot, 2_000_000 // n))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        w = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)  # (b, n) resample counts
        with np.errstate(invalid="ignore", divide="ignore"):
            means[start:start + b] = (w @ sums_src) / (w @ counts_src)
    alpha = (1.0 - confidence) / 2.0
    lo = np.full(m, np.nan)
    hi = np.full(m, np.nan)
    for j in range(m):
        col = means[:, j][np.isfinite(means[:, j])]
        if col.size:
            lo[j], hi[j] = np.quantile(col, [alpha, 1.0 - alpha])
    return (float(lo[0]), float(hi[0])) if one_d else (lo, hi)


# ------------------------------------------------------------------------------------------------ scoring

def read_outputs(path, tasks: Sequence[Task]) -> dict[str, str]:
    """Read an outputs JSONL file (format in the module docstring) against the tasks it answers."""
    path = str(path)
    wanted = {t.id for t in tasks}
    outputs: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, value, err in iter_jsonl(path):
        if err is not None:
            raise err
        if not isinstance(value, dict):
            raise InputError(f"a record must be a JSON object, got {type(value).__name__}", path=path, line=lineno)
        for name in ("id", "output"):
            if name not in value:
                raise InputError("missing", path=path, line=lineno, field=name)
        tid, out = value["id"], value["output"]
        if not isinstance(tid, str):
            raise InputError(f"must be a string, got {type(tid).__name__}", path=path, line=lineno, field="id")
        if not isinstance(out, str):
            raise InputError(f"must be a string, got {type(out).__name__}", path=path, line=lineno, field="output")
        if tid not in wanted:
            raise InputError(f"no task has id {tid!r}", path=path, line=lineno, field="id")
        if tid in first_line:
            raise InputError(f"second output for task {tid!r} (first on line {first_line[tid]})",
                             path=path, line=lineno, field="id")
        first_line[tid] = lineno
        outputs[tid] = out
    _check_complete(tasks, outputs, path)
    return outputs


def _check_complete(tasks, outputs, path=None):
    missing = [t.id for t in tasks if t.id not in outputs]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"no output for {len(missing)} of {len(tasks)} tasks ({shown})", path=path)


def per_task(tasks: Sequence[Task], outputs, *, k: int = 5, relevant: str = "positive") -> dict:
    """Per-task results: {"kind": [Kind], "repaired": bool array, and for each metric m in ndcg@1, ndcg@k,
    recall@k, mrr: m + "_valid" (score of the valid output, 0 if invalid) and m + "_repaired"} as arrays."""
    outputs = _as_mapping(tasks, outputs)
    names = ("ndcg@1", "ndcg@k", "recall@k", "mrr")
    res = {"kind": [], "repaired": np.zeros(len(tasks), dtype=bool)}
    for name in names:
        res[name + "_valid"] = np.zeros(len(tasks))
        res[name + "_repaired"] = np.zeros(len(tasks))
    for j, task in enumerate(tasks):
        contract = RankingContract(task.candidate_ids)
        text = outputs[task.id]
        verdict = contract.check(text)
        res["kind"].append(verdict.kind)
        if verdict.ok:
            for name, v in ranking_metrics(verdict.ranking, task, k, relevant).items():
                res[name + "_valid"][j] = v
        fixed = contract.repair(text)
        if fixed is not None:
            res["repaired"][j] = True
            for name, v in ranking_metrics(fixed, task, k, relevant).items():
                res[name + "_repaired"][j] = v
    return res


def _as_mapping(tasks, outputs) -> Mapping[str, str]:
    if isinstance(outputs, Mapping):
        _check_complete(tasks, outputs)
        return outputs
    outputs = list(outputs)
    if len(outputs) != len(tasks):
        raise InputError(f"{len(outputs)} outputs for {len(tasks)} tasks")
    return {t.id: o for t, o in zip(tasks, outputs)}


def score(tasks: Sequence[Task], outputs, *, k: int = 5, relevant: str = "positive", n_boot: int = 1000,
          seed: int = 0, confidence: float = 0.95) -> dict:
    """Score outputs (a mapping task id -> text, or a list aligned with tasks) against tasks.

    Returns a JSON-ready dict: n, n_parsed, k, relevant, n_boot, seed, confidence, n_no_relevant,
    failure_kinds (count of every Kind, ok included), strict_parse_rate, repair_rate, and for each metric
    in ndcg@1, ndcg@{k}, recall@{k}, mrr and each variant in parsed, strict, repaired the point value
    "<metric>_<variant>" and its interval "<metric>_<variant>_ci" = [lo, hi] (None where undefined)."""
    if not tasks:
        raise InputError("no tasks to score")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    relevant_ids({"x": 1}, relevant)  # validates the rule
    r = per_task(tasks, outputs, k=k, relevant=relevant)
    valid = np.array([kind is Kind.OK for kind in r["kind"]])
    n = len(tasks)

    columns, masks, names = [valid.astype(float)], [np.ones(n, dtype=bool)], ["strict_parse_rate"]
    columns.append(r["repaired"].astype(float))
    masks.append(np.ones(n, dtype=bool))
    names.append("repair_rate")
    for metric in ("ndcg@1", "ndcg@k", "recall@k", "mrr"):
        label = metric.replace("@k", f"@{k}")
        for variant, col, mask in (("parsed", r[metric + "_valid"], valid),
                                   ("strict", r[metric + "_valid"], np.ones(n, dtype=bool)),
                                   ("repaired", r[metric + "_repaired"], np.ones(n, dtype=bool))):
            columns.append(col)
            masks.append(mask)
            names.append(f"{label}_{variant}")
    values, masks = np.vstack(columns), np.vstack(masks)
    lo, hi = bootstrap_ci(values, masks, n_boot=n_boot, seed=seed, confidence=confidence)

    out = {
        "n": n,
        "n_parsed": int(valid.sum()),
        "k": k,
        "relevant": relevant,
        "n_no_relevant": sum(1 for t in tasks if not relevant_ids(t.relevance, relevant)),
        "n_boot": n_boot,
        "seed": seed,
        "confidence": confidence,
        "failure_kinds": {kind.value: sum(1 for x in r["kind"] if x is kind) for kind in KINDS},
    }
    for j, name in enumerate(names):
        m = masks[j]
        point = float(values[j][m].mean()) if m.any() else None
        out[name] = point
        out[name + "_ci"] = None if point is None or math.isnan(lo[j]) else [float(lo[j]), float(hi[j])]
    return out
