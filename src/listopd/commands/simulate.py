"""Train one categorical position with the trainer's own loss over a λ grid and locate the cliff.

For each clip strength c: per λ, the final student modal mass (mean ± spread over seeds), the predicted
fixed point q_λ, whether the run left the clip-safe region, and the observed onset λ beside λ*(p, b, c).
Onset: the smallest grid λ whose final modal mass overshoots the fixed point by more than --tolerance in
logit space (see listopd.experiment.simulate). Every onset is reported with its step budget.

Example:  listopd simulate --p 0.999 --b 0.9 --c 2 3 5 --lambdas 1:1.6:0.025 --plot sim.png
"""

from __future__ import annotations

import argparse
import json
import sys

from listopd.util.io import atomic_write_json
from listopd.commands.argtypes import positive_int


def parse_grid(text: str) -> tuple[float, ...]:
    """'1:1.5:0.05' (start:stop:step, stop included) or '1,1.1,1.2'."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            return tuple(round(start + i * step, 6) for i in range(n))
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected start:stop:step with step > 0 and stop ≥ start, or a comma list; got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=float, default=0.999, help="teacher mass on the modal class (default 0.999)")
    p.add_argument("--b", type=float, default=0.9, help="base / warm-start mass on the modal class (0.9)")
    p.add_argument("--c", type=float, nargs="+", default=[3.0], help="clip strength(s) c > 1 (default 3)")
    p.add_argument("--lambdas", type=parse_grid, default=(),
                   help="λ grid, start:stop:step or a comma list (default: 13 points from 1 to 2λ*−1)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="seeds per λ (default: 1 for exact dynamics, which is deterministic; 3 for sampled)")
    p.add_argument("--steps", type=positive_int, default=20000, help="step budget per run (default 20000)")
    p.add_argument("--dynamics", choices=("exact", "sampled"), default="exact",
                   help="exact expected gradient, or tokens sampled from the student each step")
    p.add_argument("--samples-per-step", type=positive_int, default=256)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: sgd 2.0, adam 0.05)")
    p.add_argument("--clip-mode", choices=("teacher_ratio", "truncated_is", "dual_clip", "none"),
                   default="teacher_ratio")
    p.add_argument("--contract-aware", action="store_true",
                   help="contract-aware extrapolation: λ only on the modal (contract-keeping) class")
    p.add_argument("--n-modal", type=positive_int, default=1, help="tokens in the modal class (K-ary when > 1)")
    p.add_argument("--n-tail", type=positive_int, default=4, help="tokens in the tail class")
    p.add_argument("--tolerance", type=float, default=0.5, help="onset overshoot in logit nats (0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--plot", help="write a PNG of tail mass against λ with λ* marked")


def run(args: argparse.Namespace) -> int:
    import torch

    from listopd.experiment.simulate import SimConfig, plot, simulate

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    seeds = args.seeds if args.seeds is not None else (1 if args.dynamics == "exact" else 3)
    lr = args.lr if args.lr is not None else (2.0 if args.optimizer == "sgd" else 0.05)
    configs = [SimConfig(p=args.p, b=args.b, c=c, lambdas=args.lambdas, seeds=seeds, steps=args.steps,
                         dynamics=args.dynamics, samples_per_step=args.samples_per_step,
                         optimizer=args.optimizer, lr=lr, clip_mode=args.clip_mode, contract_aware=args.contract_aware,
                         n_modal=args.n_modal,
                         n_tail=args.n_tail, tolerance=args.tolerance) for c in args.c]
    results = []
    for cfg in configs:
        results.append(simulate(cfg, progress=_progress(f"c={cfg.c:g}", quiet=args.json)))
    summary = {"results": [r.to_dict() for r in results]}
    if args.out:
        atomic_write_json(args.out, summary)
    if args.plot:
        plot(results, args.plot)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for r in results:
            print(format_table(r))
        print(format_onset_summary(results))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def format_table(result) -> str:
    cfg = result.config
    head = (f"\np={cfg.p} b={cfg.b} c={cfg.c:g}  mode={cfg.clip_mode} dynamics={cfg.dynamics} "
            f"optimizer={cfg.optimizer} lr={cfg.lr} steps={cfg.steps} seeds={cfg.seeds}\n"
            f"{'λ':>7} {'q mean':>10} {'q sd':>9} {'tail mean':>10} {'q_λ':>10} {'tail_λ':>10} "
            f"{'overshoot':>9} {'left safe':>9}")
    lines = [head]
    for i, lam in enumerate(result.lambdas):
        lines.append(f"{lam:7.4f} {result.modal_mass[i].mean():10.6f} {result.modal_mass[i].std():9.2e} "
                     f"{result.modal_tail[i].mean():10.3e} {result.fixed_point[i]:10.6f} "
                     f"{result.fixed_point_tail[i]:10.3e} {result.departure[i].mean():+9.3f} "
                     f"{result.left_clip_safe[i].mean():9.0%}")
    return "\n".join(lines)


def format_onset_summary(results) -> str:
    lines = ["", f"{'c':>6} {'λ*(p,b,c)':>10} {'λ*(p,c)':>9} {'onset per seed':>24} {'budget':>7}"]
    from listopd.core import theory

    for r in results:
        onsets = ", ".join("none" if o is None else f"{o:g}" for o in r.onsets)
        lines.append(f"{r.config.c:6g} {r.lambda_star:10.4f} "
                     f"{float(theory.lambda_star_base_neutral(r.config.p, r.config.c)):9.4f} "
                     f"{onsets:>24} {r.config.steps:7d}")
    return "\n".join(lines)


def _progress(label: str, quiet: bool):
    """A one-line progress indicator on stderr (silent under --json only if stderr is not a terminal)."""
    if quiet and not sys.stderr.isatty():
        return None

    def report(step: int, total: int) -> None:
        if step == total or step % max(1, total // 20) == 0:
            sys.stderr.write(f"\rsimulate {label}: step {step}/{total}")
            if step == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return report

