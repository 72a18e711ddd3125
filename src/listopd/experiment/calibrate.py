"""Calibration: measure the teacher's modal mass p and the warm start's mass b on the contract-keeping
class at every structural position of real outputs, and predict the cliff λ*(p, b, c).

1. Outputs. For each task, contract-valid outputs are walked token by token: the reference ranking
   (`target_text`) and, where it is valid, the teacher's greedy output. Each ends with EOS.
2. Contract-keeping class. At a position with prefix text s, a vocabulary token v keeps the contract when
   s + text(v) is still a viable prefix of a valid output (the contract automaton, advanced once per
   position and tested against every token's text; cached per automaton state). EOS keeps the contract
   exactly when s is already complete. Special tokens, and byte-level tokens that are only part of a UTF-8
   character (their text holds U+FFFD), never keep it (a documented approximation: with ASCII ids and
   JSON syntax such a token cannot be the next piece of a valid output).
3. Masses. Teacher-forced, the teacher's and the warm start's next-token distributions at every output
   position give p_t and b_t = their total probability on the keeping class.
4. Roles. Each position is labelled by the role of the reference token there: open_brace, key, colon,
   open_bracket, quote, id, separator, close_bracket, close_brace, whitespace, eos (a token spanning
   several roles gets them joined with '+'; a tokenizer that merges `", "` gives quote+separator+quote).
   Id positions are also numbered (id_1 … id_K): the keeping class shrinks as ids are used up.

Aggregation (the rule, and why). Within a role the tail masses are averaged, p_role = 1 − mean(1 − p_t)
and likewise b_role: the tail mass is the per-position probability of breaking the contract, the quantity
the clip-safe ratio (1 − p)/(1 − q) is about, and its mean is dominated by the positions most likely to
break — a geometric or median aggregate would hide them. The binding role is the role with the smallest
λ*(p_role, b_role, c): the first class whose extrapolated fixed point leaves the clip-safe region as λ
grows. Its (p, b) are the calibration's (p, b). The interval is a percentile bootstrap over tasks (the
same resamples for p, b and λ*). Separately, the roles at which the warm start's own greedy outputs
first break the contract are counted (the failure-dominant role), to compare with the binding role.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from listopd.core import theory
from listopd.core.fixed_points import CAPPED_LAMBDAS, FULL_VOCAB_LAMBDAS, capped_full_vocab_table, full_vocab_keep
from listopd.task.roles import VocabularyText, role_keys, walk_output
from listopd.train.role_mass import next_token_probs
from listopd.train.cliff import CALIBRATION_VERSION  # the version of calibration.json, which train/cliff.py reads


@dataclass
class Position:
    task: str
    source: str  # "reference" or "teacher"
    index: int  # token index within the output
    role: str
    id_rank: int | None  # 1..K at id positions
    class_size: int  # tokens in the keeping class
    p: float
    b: float
    keep_fv: np.ndarray | None = None  # keeping mass of the full-vocabulary q_λ over FULL_VOCAB_LAMBDAS
    keep_fv_aware: np.ndarray | None = None  # the same for contract-aware extrapolation's fixed point
    keep_fv_capped: np.ndarray | None = None  # the same for the teacher_ratio rest point at c (an upper bound)
    keep_fv_base_ratio: np.ndarray | None = None  # the base_ratio rest point's, over CAPPED_LAMBDAS
    two_sided_departs: np.ndarray | None = None  # bool over CAPPED_LAMBDAS: two_sided's rest point is not TR's


@dataclass
class Calibration:
    c: float
    positions: list[Position]
    failure_roles: Counter = field(default_factory=Counter)
    n_boot: int = 1000
    seed: int = 0

    def role_table(self, positions=None) -> dict[str, dict]:
        """Per role: n, p and b (1 − mean tail), λ*(p,b,c), λ*(p,c)."""
        groups = defaultdict(list)
        for pos in positions if positions is not None else self.positions:
            for key in role_keys(pos.role, pos.id_rank):
                groups[key].append(pos)
        table = {}
        for role, items in groups.items():
            p = 1.0 - float(np.mean([1.0 - x.p for x in items]))
            b = 1.0 - float(np.mean([1.0 - x.b for x in items]))
            table[role] = {"n": len(items), "p": p, "b": b,
                           "lambda_star": theory.lambda_star_or_none(p, b, self.c),
                           "lambda_star_base_neutral": theory.lambda_star_or_none(p, None, self.c, form="base_neutral")}
        return table

    def binding(self, table: dict[str, dict]) -> str | None:
        """The role (not an id_k sub-role) with the smallest finite λ*."""
        finite = {r: v["lambda_star"] for r, v in table.items()
                  if not r.startswith("id_") and v["lambda_star"] is not None and math.isfinite(v["lambda_star"])}
        return min(finite, key=finite.get) if finite else None

    def summary(self) -> dict:
        table = self.role_table()
        role = self.binding(table)
        out = {"version": CALIBRATION_VERSION, "c": self.c, "binding_role": role, "roles": table,
               "n_tasks": len({p.task for p in self.positions}), "n_positions": len(self.positions),
               "aggregation": "per role: p = 1 − mean over positions of the teacher's tail mass (b likewise); "
                              "binding role = smallest λ*(p, b, c); interval: percentile bootstrap over tasks",
               "failure_roles": dict(self.failure_roles.most_common())}
        if role is None:
            out.update({"p": None, "b": None, "lambda_star": None, "lambda_star_base_neutral": None})
            return out
        p, b = table[role]["p"], table[role]["b"]
        out.update({"p": p, "b": b, "lambda_star": table[role]["lambda_star"],
                    "lambda_star_base_neutral": table[role]["lambda_star_base_neutral"]})
        out.update(self._bootstrap(role))
        return out

    def full_vocabulary(self) -> dict | None:
        """The full-vocabulary fixed point (core/fixed_points.py) along the walked outputs: per role the tail of
        q_λ (1 − mean keeping mass) over FULL_VOCAB_LAMBDAS, and the predicted parse rate Π_t keep_t(λ) of one
        output per task (the reference where walked, else the teacher's), its mean over tasks with a bootstrap
        interval, the λ ≥ 1 where it peaks and the first grid λ above the peak where it falls below its value at
        λ = 1 (the teacher's own): a second predicted onset, beside λ*(p, b, c). The same for the fixed point of
        contract-aware extrapolation under `contract_aware`, and for the rest point under the teacher_ratio cap at
        c under `teacher_ratio_capped` (core/fixed_points.capped_full_vocab_keep: the rest point with the most
        surviving tail tokens, so its tail is an upper bound on what the cap lets live); under `base_ratio_capped`
        the base_ratio rest point over CAPPED_LAMBDAS (core/fixed_points.base_ratio_rest_point), and under
        `two_sided_capped` the share of positions (and of outputs with at least one) where two_sided's rest point
        departs from teacher_ratio's, where the outcome depends on the dynamics (two_sided_departs)."""
        if not self.positions or self.positions[0].keep_fv is None:
            return None
        out = self._predicted_parse("keep_fv")
        groups = defaultdict(list)
        for pos in self.positions:
            for key in role_keys(pos.role, pos.id_rank):
                groups[key].append(pos.keep_fv)
        out["role_tail"] = {r: (1.0 - np.mean(v, axis=0)).tolist() for r, v in sorted(groups.items())}
        out["contract_aware"] = self._predicted_parse("keep_fv_aware")
        if self.positions[0].keep_fv_capped is not None:
            out["teacher_ratio_capped"] = {"c": self.c, **self._predicted_parse("keep_fv_capped")}
        if self.positions[0].keep_fv_base_ratio is not None:
            out["base_ratio_capped"] = {"c": self.c, **self._predicted_parse("keep_fv_base_ratio", CAPPED_LAMBDAS)}
            departs = np.array([pos.two_sided_departs for pos in self.positions])
            by_output = defaultdict(list)
            for pos in self.positions:
                by_output[(pos.task, pos.source)].append(pos.two_sided_departs)
            out["two_sided_capped"] = {
                "c": self.c, "lambdas": list(CAPPED_LAMBDAS), "departs_positions": departs.mean(axis=0).tolist(),
                "departs_outputs": np.mean([np.any(v, axis=0) for v in by_output.values()], axis=0).tolist()}
        return out

    def _predicted_parse(self, attr: str, lambdas=FULL_VOCAB_LAMBDAS) -> dict:
        lams = np.array(lambdas)
        outputs = defaultdict(lambda: defaultdict(list))
        for pos in self.positions:
            outputs[pos.task][pos.source].append(getattr(pos, attr))
        per_task = np.array([np.prod(o["reference"] if "reference" in o else o["teacher"], axis=0)
                             for o in outputs.values()])
        mean = per_task.mean(axis=0)
        rng = np.random.default_rng(self.seed)
        boot = np.array([per_task[rng.integers(0, len(per_task), len(per_task))].mean(axis=0)
                         for _ in range(self.n_boot)])
        at_one = int(np.nonzero(lams == 1.0)[0][0])
        peak = at_one + int(np.argmax(mean[at_one:]))
        below = [i for i in range(peak + 1, len(lams)) if mean[i] < mean[at_one]]
        return {"lambdas": lams.tolist(), "predicted_parse": mean.tolist(),
                "predicted_parse_ci": np.percentile(boot, [2.5, 97.5], axis=0).T.tolist(),
                "peak_lambda": float(lams[peak]), "onset_lambda": float(lams[below[0]]) if below else None,
                "n_outputs": len(per_task)}

    def _bootstrap(self, role: str) -> dict:
        by_task = defaultdict(list)
        for pos in self.positions:
            if pos.role == role:
                by_task[pos.task].append(pos)
        tasks = list(by_task)
        rng = np.random.default_rng(self.seed)
        p_tail = [np.array([1 - x.p for x in by_task[t]]) for t in tasks]
        b_tail = [np.array([1 - x.b for x in by_task[t]]) for t in tasks]
        ps, bs, lams, lams0 = [], [], [], []
        for _ in range(self.n_boot):
            pick = rng.integers(0, len(tasks), len(tasks))
            p = 1 - float(np.concatenate([p_tail[i] for i in pick]).mean())
            b = 1 - float(np.concatenate([b_tail[i] for i in pick]).mean())
            ps.append(p)
            bs.append(b)
            lams.append(theory.lambda_star_or_none(p, b, self.c))
            lams0.append(theory.lambda_star_or_none(p, None, self.c, form="base_neutral"))

        def ci(values):
            v = np.array([x if x is not None else np.nan for x in values], dtype=float)
            v = v[np.isfinite(v)]
            return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None

        return {"p_ci": ci(ps), "b_ci": ci(bs), "lambda_star_ci": ci(lams),
                "lambda_star_base_neutral_ci": ci(lams0), "n_boot": self.n_boot}


def calibrate(teacher, warm_start, tokenizer, tasks, *, c: float, sources=("reference", "teacher"),
              warm_outputs: dict[str, str] | None = None, max_new_tokens: int = 64, n_boot: int = 1000,
              seed: int = 0, progress=None) -> Calibration:
    """Measure p_t and b_t at every position of every valid output of every task (see module docstring).

    `warm_outputs` (task id -> the warm start's own output) adds the failure-role counts."""
    from listopd.task.contract import RankingContract
    from listopd.task.prompts import encode_prompt, target_text
    from listopd.train.evaluation import generate_outputs

    width = teacher.get_output_embeddings().weight.shape[0]
    vocab = VocabularyText.from_tokenizer(tokenizer, width=width)
    teacher_out = (generate_outputs(teacher, tokenizer, tasks, max_new_tokens=max_new_tokens)
                   if "teacher" in sources else {})
    positions, failures = [], Counter()
    for n, task in enumerate(tasks):
        contract = RankingContract.for_task(task)
        prompt = encode_prompt(task, tokenizer)
        outputs = {"reference": target_text(task)} if "reference" in sources else {}
        if "teacher" in sources and contract.check(teacher_out[task.id]).ok:
            outputs["teacher"] = teacher_out[task.id]
        for source, text in outputs.items():
            out_ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            steps = walk_output(contract, vocab, tokenizer, out_ids)
            log_pt = next_token_probs(teacher, prompt, out_ids, log=True)
            log_pb = next_token_probs(warm_start, prompt, out_ids, log=True)
            pt, pb = np.exp(log_pt), np.exp(log_pb)
            for t, (mask, role, rank) in enumerate(steps):
                w = len(mask)  # the tokenizer's tokens (the model's head may be wider)
                capped = capped_full_vocab_table(log_pt[t, :w], log_pb[t, :w], mask, c)
                positions.append(Position(task.id, source, t, role, rank, int(mask.sum()),
                                          float(pt[t, :w][mask].sum()), float(pb[t, :w][mask].sum()),
                                          full_vocab_keep(log_pt[t, :w], log_pb[t, :w], mask),
                                          full_vocab_keep(log_pt[t, :w], log_pb[t, :w], mask,
                                                          contract_aware=True),
                                          capped["teacher_ratio"], capped["base_ratio"],
                                          capped["two_sided_departs"]))
        if warm_outputs is not None:
            failures[failure_role(contract, warm_outputs[task.id])] += 1
        if progress is not None:
            progress(n + 1, len(tasks))
    return Calibration(c=c, positions=positions, failure_roles=failures, n_boot=n_boot, seed=seed)


def calibrate_models(teacher: str, warm_start: str, tasks: str, *, c: float, sources=("reference", "teacher"),
                     max_tasks: int | None = None, n_boot: int = 1000, out: str | None = None,
                     progress=None) -> dict:
    """`listopd calibrate` from Python: load the teacher and warm-start folders (same tokenizer), walk the
    first `max_tasks` tasks of the file, and return the calibration summary (the content of calibration.json:
    per-role p and b, the binding role, λ* with its interval); with `out`, also write OUT/calibration.json
    (what `listopd opd --calibration` reads) and OUT/calibration.png."""
    import os
    import time

    from listopd.task.tasks import read_tasks
    from listopd.train.evaluation import check_prompts_fit, generate_outputs
    from listopd.train.models import check_same_vocabulary, load_model, load_tokenizer
    from listopd.util.io import atomic_write_json, json_safe

    tokenizer = load_tokenizer(warm_start)
    check_same_vocabulary(tokenizer, load_tokenizer(teacher), names=("warm start", "teacher"))
    teacher_model, warm = load_model(teacher).eval(), load_model(warm_start).eval()
    task_list = read_tasks(tasks)[:max_tasks]
    check_prompts_fit([teacher_model, warm], tokenizer, task_list, source=tasks, room=64)  # 64: the outputs' limit
    t0 = time.time()
    warm_outputs = generate_outputs(warm, tokenizer, task_list, max_new_tokens=64)
    cal = calibrate(teacher_model, warm, tokenizer, task_list, c=c, sources=sources, warm_outputs=warm_outputs,
                    n_boot=n_boot, progress=progress)
    summary = {**cal.summary(), "full_vocabulary": cal.full_vocabulary(), "teacher": teacher, "warm_start": warm_start, "tasks": tasks,
               "sources": list(sources), "seconds": round(time.time() - t0, 1)}
    assert summary["version"] == CALIBRATION_VERSION
    if out:
        os.makedirs(out, exist_ok=True)
        atomic_write_json(os.path.join(out, "calibration.json"), json_safe(summary))
        plot_roles(summary, os.path.join(out, "calibration.png"))
    return summary


def failure_role(contract, text: str) -> str:
    """Where a warm-start output first breaks the contract: 'ok', or the failure kind with the number of
    the list entry it broke at (e.g. 'duplicate_id@id_7': the 7th entry repeated an id)."""
    verdict = contract.check(text)
    if verdict.ok:
        return "ok"
    if verdict.kind in ("duplicate_id", "unknown_id", "missing_id", "wrong_shape") and verdict.position is not None:
        before = text[:verdict.position]
        entry = before.count('"') // 2  # complete strings before the break: the key, then ids
        return f"{verdict.kind}@id_{entry}" if entry >= 1 else str(verdict.kind)
    return str(verdict.kind)


def format_table(summary: dict) -> str:
    """The per-role table, binding role first marked with '*'."""
    c = summary["c"]
    lines = [f"{'role':<22} {'n':>6} {'p (teacher)':>12} {'b (warm)':>12} {f'λ*(p,b,c={c:g})':>16} {'λ*(p,c)':>9}"]

    def fmt(x):
        return "—" if x is None else ("inf" if math.isinf(x) else f"{x:.4f}")

    for role, v in sorted(summary["roles"].items(), key=lambda kv: (kv[0].startswith("id_"), kv[0])):
        mark = "*" if role == summary["binding_role"] else " "
        lines.append(f"{mark}{role:<21} {v['n']:>6} {v['p']:>12.6f} {v['b']:>12.6f} "
                     f"{fmt(v['lambda_star']):>16} {fmt(v['lambda_star_base_neutral']):>9}")
    return "\n".join(lines)


def plot_roles(summary: dict, path: str) -> None:
    """Bar chart of λ*(p, b, c) and λ*(p, c) per role (roles without a finite λ* are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = [r for r, v in summary["roles"].items()
             if v["lambda_star_base_neutral"] is not None and math.isfinite(v["lambda_star_base_neutral"])]
    roles.sort(key=lambda r: summary["roles"][r]["lambda_star_base_neutral"])
    x = np.arange(len(roles))
    def finite_or_nan(v):
        return v if v is not None and math.isfinite(v) else np.nan

    lam = [finite_or_nan(summary["roles"][r]["lambda_star"]) for r in roles]
    lam0 = [finite_or_nan(summary["roles"][r]["lambda_star_base_neutral"]) for r in roles]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(roles) + 2), 4.2))
    ax.bar(x - 0.2, lam, 0.4, label="λ*(p, b, c)")
    ax.bar(x + 0.2, lam0, 0.4, label="λ*(p, c), base-neutral")
    if summary.get("lambda_star") is not None:
        ax.axhline(summary["lambda_star"], color="C3", ls=":",
                   label=f"predicted λ* = {summary['lambda_star']:.3f} ({summary['binding_role']})")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(x, roles, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("λ* (extrapolation cliff; bars cut at 4, missing = ∞)")
    finite = [v for v in lam + lam0 if v == v and math.isfinite(v)]
    if finite:
        ax.set_ylim(0.9, min(max(finite) * 1.05, 4.0))
    ax.set_title(f"cliff per structural role, c = {summary['c']:g} ({summary['n_tasks']} tasks)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
