"""Constrained-decoding baseline: would a grammar engine alone have fixed the output format?

The same model decodes the same tasks three ways, through the same KV-cache loop (`listopd.train.rollout.sample`,
whose `logits_hook` masks the logits before the argmax or the sampling), at the same batch size:

    unconstrained   the plain model, as `listopd.train.evaluation.evaluate` decodes it
    json-schema     xgrammar (a real grammar engine) compiled from the ranking contract written as JSON Schema:
                        {"type": "object",
                         "properties": {"ranking": {"type": "array", "items": {"enum": [ids]},
                                                    "minItems": K, "maxItems": K, "uniqueItems": true}},
                         "required": ["ranking"], "additionalProperties": false}
                    one schema per task (its candidate ids); xgrammar's matcher fills a token bitmask per row
                    and per step, disallowed tokens get -inf, EOS is allowed only once the object is complete
    contract        our own automaton (`listopd.task.contract.RankingContract`, `State.viable_mask`) as the mask:
                    NOT a grammar engine, named separately; it enforces the whole contract, uniqueness included

Each is scored by `listopd.task.metrics.score` (strict parse rate, failure kinds, NDCG@1 parsed / strict, ...).
Tokens per second = completion tokens (EOS included) / wall-clock seconds of the decoding loop (prefill,
forwards, masks); the one-off grammar compilation and tokenizer analysis are reported apart (a server
caches them).

What the engine enforces is not assumed: `probe_engine` feeds the compiled grammar one string per schema
keyword that breaks exactly that keyword, and a keyword whose breaking string the matcher accepts (through to
EOS) is listed as not enforced. With xgrammar 0.2.8, `uniqueItems` is not enforced (the grammar is
context-free: it cannot remember which ids were used), so a constrained output can still repeat an id and
fail our strict parser as `duplicate_id`; `enum`, `minItems`, `maxItems`, `required` and
`additionalProperties` are enforced.

Format: by default the grammar admits only the canonical separators (", " and ": ", no other whitespace),
which is the training target's format (`listopd.task.contract.canonical_json`). Our strict parser accepts any JSON
whitespace, so this only narrows the outputs it would accept. `any_whitespace=True` uses xgrammar's default
(JSON whitespace anywhere the grammar allows it), where a model can spend its tokens on whitespace.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import metadata

from listopd.util.errors import ListopdError

DECODINGS = ("unconstrained", "json-schema", "contract")
ENGINE = "xgrammar"


def ranking_schema(ids, key: str = "ranking") -> dict:
    """The ranking contract of one task as JSON Schema (see the module docstring)."""
    ids = list(ids)
    return {"type": "object",
            "properties": {key: {"type": "array", "items": {"enum": ids}, "minItems": len(ids),
                                 "maxItems": len(ids), "uniqueItems": True}},
            "required": [key], "additionalProperties": False}


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise ListopdError("the json-schema decoding needs xgrammar: pip install 'listopd[constrained]' "
                           "(or xgrammar==0.2.8)") from None
    return xgrammar


def engine_version() -> str:
    return metadata.version(ENGINE)


class SchemaEngine:
    """xgrammar set up once for a tokenizer and a logits width; compiled grammars cached per id list."""

    def __init__(self, tokenizer, width: int, *, any_whitespace: bool = False, threads: int = 1):
        xgr = _xgrammar()
        t0 = time.perf_counter()
        self.xgr, self.width, self.eos_id = xgr, width, tokenizer.eos_token_id
        self.any_whitespace = any_whitespace
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=width, stop_token_ids=[self.eos_id])
        self.compiler = xgr.GrammarCompiler(info, max_threads=threads)
        self.batch = xgr.BatchGrammarMatcher(max_threads=threads)
        self.grammars: dict[tuple[str, ...], object] = {}
        self.setup_seconds = time.perf_counter() - t0
        self.compile_seconds = 0.0

    @property
    def format(self) -> str:
        return ("any JSON whitespace (xgrammar default any_whitespace=True)" if self.any_whitespace else
                "canonical separators ', ' and ': ', no other whitespace (any_whitespace=False)")

    def grammar(self, ids):
        ids = tuple(ids)
        if ids not in self.grammars:
            t0 = time.perf_counter()
            kwargs = {} if self.any_whitespace else {"any_whitespace": False, "separators": (", ", ": ")}
            self.grammars[ids] = self.compiler.compile_json_schema(json.dumps(ranking_schema(ids)),
                                                                    strict_mode=True, **kwargs)
            self.compile_seconds += time.perf_counter() - t0
        return self.grammars[ids]

    def hook(self, tasks) -> "GrammarHook":
        matchers = [self.xgr.GrammarMatcher(self.grammar(t.candidate_ids)) for t in tasks]
        return GrammarHook(self, matchers)

    def accepts(self, ids, text: str) -> bool:
        """Does the grammar for `ids` accept `text` as a whole output (text, then EOS)?"""
        m = self.xgr.GrammarMatcher(self.grammar(ids))
        return bool(m.accept_string(text) and m.accept_token(self.eos_id) and m.is_terminated())


@dataclass
class GrammarHook:
    """`rollout.sample`'s logits_hook for one batch: one xgrammar matcher per row."""
    engine: SchemaEngine
    matchers: list
    seconds: float = 0.0
    live: list[bool] = field(default_factory=list)

    def __post_init__(self):
        self.live = [True] * len(self.matchers)
        self.bitmask = self.engine.xgr.allocate_token_bitmask(len(self.matchers), self.engine.width)

    def __call__(self, prev, logits):
        t0 = time.perf_counter()
        if prev is not None:
            rows = [i for i, ok in enumerate(self.live) if ok]
            accepted = self.engine.xgr.BatchGrammarMatcher.batch_accept_token(
                [self.matchers[i] for i in rows], [int(prev[i]) for i in rows])
            if not all(accepted):
                raise RuntimeError("xgrammar refused a token its own bitmask allowed")
            for i in rows:
                self.live[i] = not self.matchers[i].is_terminated()
        rows = [i for i, ok in enumerate(self.live) if ok]
        logits = logits.float().contiguous()
        if rows:
            self.engine.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in rows], self.bitmask,
                                                          indices=rows)  # matcher j fills row rows[j]
            self.engine.xgr.apply_token_bitmask_inplace(logits, self.bitmask.to(logits.device), indices=rows)
        self.seconds += time.perf_counter() - t0
        return logits


class ContractHook:
    """`rollout.sample`'s logits_hook for one batch, masking with our own contract automaton: each row keeps
    only the tokens whose text keeps its output completable (EOS only once it is complete)."""

    def __init__(self, vocab, tasks):
        from listopd.task.contract import RankingContract

        self.vocab = vocab  # listopd.task.roles.VocabularyText
        self.states = [RankingContract.for_task(t).start() for t in tasks]
        self.seconds = 0.0

    def __call__(self, prev, logits):
        import numpy as np
        import torch

        t0 = time.perf_counter()
        masks = np.zeros(logits.shape, dtype=bool)
        for i, state in enumerate(self.states):
            if state is None:
                masks[i] = True  # finished row: sample() writes PAD there whatever the logits say
                continue
            if prev is not None:
                tok = int(prev[i])
                state = None if tok == self.vocab.eos_id else state.feed(self.vocab.texts[tok])
                self.states[i] = state
                if state is None:
                    masks[i] = True
                    continue
            masks[i] = self.vocab.keeping_mask(state)
        logits = logits.float().masked_fill(~torch.from_numpy(masks).to(logits.device), float("-inf"))
        self.seconds += time.perf_counter() - t0
        return logits


def probe_engine(engine: SchemaEngine, ids) -> dict[str, bool]:
    """keyword -> enforced?, from one output per schema keyword that breaks only that keyword (written in
    the canonical format, which every whitespace setting admits)."""
    ids = list(ids)
    k = len(ids)
    unknown = "Z" * (1 + max(len(x) for x in ids))

    def obj(ranking, extra=""):
        return '{"ranking": ' + json.dumps(ranking) + extra + "}"

    cases = {"uniqueItems": obj([ids[0]] * k), "minItems": obj(ids[:-1]), "maxItems": obj(ids + [ids[0]]),
             "enum": obj(ids[:-1] + [unknown]), "additionalProperties": obj(ids, ', "extra": 1'),
             "required": "{}"}
    if not engine.accepts(ids, obj(ids)):
        raise RuntimeError(f"{ENGINE} rejects the reference output {obj(ids)!r}")
    return {keyword: not engine.accepts(ids, text) for keyword, text in cases.items()}


def decode(model, tokenizer, tasks, decoding: str, *, engine: SchemaEngine | None = None, vocab=None,
           greedy: bool = True, temperature: float = 1.0, batch_size: int = 16, max_new_tokens: int = 64,
           seed: int = 0) -> tuple[dict[str, str], dict]:
    """Task id -> decoded output for one decoding, and its timing: completion tokens, seconds, tokens/s,
    seconds spent in the mask, truncated outputs (no EOS within max_new_tokens)."""
    import torch

    from listopd.train.rollout import sample
    from listopd.train.evaluation import decode_completions, prompt_batches

    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding {decoding!r}")
    device = next(model.parameters()).device
    generator = None if greedy else torch.Generator(device=device).manual_seed(seed)
    outputs, tokens, seconds, mask_seconds, truncated = {}, 0, 0.0, 0.0, 0
    for rows, prompts in prompt_batches(tasks, tokenizer, batch_size):
        batch = [tasks[i] for i in rows]
        hook = (engine.hook(batch) if decoding == "json-schema" else
                ContractHook(vocab, batch) if decoding == "contract" else None)
        t0 = time.perf_counter()
        rollout = sample(model, prompts, max_new_tokens=max_new_tokens,
                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, greedy=greedy,
                         temperature=temperature, generator=generator, logits_hook=hook)
        seconds += time.perf_counter() - t0
        mask_seconds += hook.seconds if hook is not None else 0.0
        tokens += int(rollout.completion_mask.sum())
        truncated += int((~rollout.ended).sum())
        for i, text in zip(rows, decode_completions(tokenizer, rollout)):
            outputs[tasks[i].id] = text
    return outputs, {"completion_tokens": tokens, "seconds": seconds,
                     "tokens_per_second": tokens / seconds if seconds > 0 else None,
                     "mask_seconds": mask_seconds, "truncated": truncated}


def run_baseline(model, tokenizer, tasks, *, decodings=DECODINGS, greedy: bool = True, temperature: float = 1.0,
                 batch_size: int = 16, max_new_tokens: int = 64, seed: int = 0, any_whitespace: bool = False,
                 n_boot: int = 1000, source: str = "tasks") -> dict:
    """Decode `tasks` once per decoding and score each; the JSON-ready result (rows, engine, schema, probe).
    Every decoding runs after one untimed warm-up batch, so no row pays for first-call set-up."""
    import torch

    from listopd.task.roles import VocabularyText
    from listopd.task.metrics import score
    from listopd.train.evaluation import check_prompts_fit
    from listopd.train.models import check_model_vocabulary

    width = check_model_vocabulary(model, tokenizer)
    check_prompts_fit([model], tokenizer, tasks, source=source, room=max_new_tokens)
    engine = (SchemaEngine(tokenizer, width, any_whitespace=any_whitespace, threads=torch.get_num_threads())
              if "json-schema" in decodings else None)
    vocab = VocabularyText.from_tokenizer(tokenizer, width) if "contract" in decodings else None
    common = dict(engine=engine, vocab=vocab, greedy=greedy, temperature=temperature, batch_size=batch_size,
                  seed=seed)
    rows = []
    for decoding in decodings:
        decode(model, tokenizer, tasks[:1], decoding, max_new_tokens=2, **common)  # warm-up, untimed
        outputs, timing = decode(model, tokenizer, tasks, decoding, max_new_tokens=max_new_tokens, **common)
        metrics = score(tasks, outputs, n_boot=n_boot, seed=seed)
        rows.append({"decoding": decoding,
                     "label": {"unconstrained": "unconstrained",
                               "json-schema": f"JSON-schema constrained ({ENGINE} {engine_version()})"
                               if engine else "json-schema",
                               "contract": "contract-masked (listopd automaton, not a grammar engine)"}[decoding],
                     "strict_parse_rate": metrics["strict_parse_rate"],
                     "ndcg@1_parsed": metrics["ndcg@1_parsed"], "ndcg@1_strict": metrics["ndcg@1_strict"],
                     "failure_kinds": {k: v for k, v in metrics["failure_kinds"].items() if v},
                     **timing, "metrics": metrics,
                     "examples": [outputs[t.id] for t in tasks[:3]]})
    result = {"kind": "constrained_decoding_baseline", "n_tasks": len(tasks),
              "decoding": {"greedy": greedy, "temperature": None if greedy else temperature, "seed": seed,
                           "batch_size": batch_size, "max_new_tokens": max_new_tokens},
              "schema": ranking_schema(tasks[0].candidate_ids),
              "schema_note": "one schema per task: enum = its candidate ids, minItems = maxItems = K",
              "rows": rows}
    if engine is not None:
        probe = probe_engine(engine, tasks[0].candidate_ids)
        result["engine"] = {"name": ENGINE, "version": engine_version(), "format": engine.format,
                            "setup_seconds": engine.setup_seconds, "compile_seconds": engine.compile_seconds,
                            "grammars_compiled": len(engine.grammars), "enforced": probe}
        result["not_enforced"] = [k for k, ok in probe.items() if not ok]
    return result
