"""Probes behind the performance section's "measured and left out" notes (not the benchmark itself).

    python benchmarks/probes.py profile    # op table of one bf16 scoring forward, small-teacher (~29M), batch 8
    python benchmarks/probes.py compile    # torch.compile: one-token forward without a cache, the real decode
                                           # (64 tokens, static KV cache, batch 8 and 16), scoring forward and
                                           # the training forward + backward, eager vs compiled, compile
                                           # seconds, and whether listopd.train.rollout.sample compiles
    python benchmarks/probes.py gqa        # SDPA with the padding mask: K/V repeated (transformers' path with a
                                           # mask) vs enable_gqa, one layer and the whole model (scoring, update)
    python benchmarks/probes.py sft-logits --model smollm2-135m --tasks TASKS.jsonl
                                           # the SFT step's forward + backward with logits at every position vs
                                           # from the earliest target on (train.sft.target_loss_sum), alternating

Random-init presets (listopd.train.models.build_model) at the benchmark's 869-token vocabulary, prompts of
291–322 tokens, one thread (--threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

PROMPT_LENS = (291, 300, 310, 322, 295, 305, 299, 310)


def tokenizer():
    """The benchmark's tokenizer: trained on the synthetic task text (869 tokens), as benchmarks/opd_step.py."""
    from listopd.task.data.synth import make_synth_tasks
    from listopd.task.tokenizer import task_texts, train_tokenizer

    return train_tokenizer(task_texts(make_synth_tasks(n_users=400)), vocab_size=2048)


def qwen3(preset: str, tok):
    """A random-init preset, as listopd builds it, in eval mode."""
    from listopd.train.models import build_model

    return build_model(preset, tok, seed=0).eval()


def scoring_batch(vocab: int, new_tokens: int = 64):
    """Left-padded prompt + completion ids, the attention mask and position ids of a scoring forward."""
    from listopd.train.rollout import left_pad, position_ids

    ids, mask = left_pad([torch.randint(3, vocab, (n + new_tokens,)).tolist() for n in PROMPT_LENS], pad_id=0)
    return ids, mask, position_ids(mask)


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def probe_profile(args) -> None:
    from torch.profiler import ProfilerActivity, profile

    tok = tokenizer()
    model = qwen3("small-teacher", tok).to(torch.bfloat16)
    ids, mask, pos = scoring_batch(len(tok))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        def forward():
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=64)
        forward()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            forward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def probe_compile(args) -> None:
    from listopd.train.rollout import sample

    tok = tokenizer()
    student, teacher = qwen3("tiny-student", tok), qwen3("tiny-teacher", tok)
    ids, mask, pos = scoring_batch(len(tok))
    one_token = ids[:, :1]
    with torch.no_grad():
        def score(m):
            return lambda: m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                             logits_to_keep=64)
        rows = {"tiny-student one-token forward, batch 8 (ms)": (lambda m: lambda: m(one_token), student),
                "tiny-teacher scoring forward, 8 x 386 tokens (ms)": (score, teacher)}
        for name, (make, model) in rows.items():
            eager = median_ms(make(model), 20 if "one-token" in name else 5)
            compiled = torch.compile(model, dynamic=True)
            t = time.perf_counter()
            make(compiled)()
            compile_s = time.perf_counter() - t
            fast = median_ms(make(compiled), 20 if "one-token" in name else 5)
            print(f"{name}: eager {eager:.2f}, compiled {fast:.2f} ({eager / fast:.2f}x), "
                  f"first compiled call {compile_s:.0f} s")
    # the real decode: 64 greedy tokens after the prompts, through transformers' StaticCache (fixed shapes and
    # addresses, what a compiled decode needs) eager and compiled, against listopd's own sample (preallocated
    # cache); the one-token row above has no cache, so it leaves out the attention over the prompt
    for batch in (8, 16):
        prompts = [torch.randint(3, len(tok), (PROMPT_LENS[i % 8],)).tolist() for i in range(batch)]
        decode = static_decode(student, prompts, 64)
        own = median_ms(lambda: sample(student, prompts, max_new_tokens=64, eos_id=-1, pad_id=0, greedy=True), 3)
        eager = median_ms(lambda: decode(student.forward), 3)
        compiled = torch.compile(student.forward, dynamic=False)
        t = time.perf_counter()
        same = torch.equal(decode(compiled), decode(student.forward))
        compile_s = time.perf_counter() - t
        fast = median_ms(lambda: decode(compiled), 3)
        print(f"tiny-student decode, 64 tokens, batch {batch} (ms): listopd sample {own:.0f}, static cache eager "
              f"{eager:.0f}, compiled {fast:.0f} ({own / fast:.2f}x of sample), first compiled call {compile_s:.0f} s, "
              f"greedy tokens {'equal' if same else 'DIFFER'}")
    # the update: the tiny student's training forward and backward over the same batch (the pipelined trainer's
    # bottleneck), shapes fixed (dynamic=False: each new completion length would compile again)
    trainee = qwen3("tiny-student", tok).train()

    def train_step(m):
        def run():
            m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
              logits_to_keep=64).logits.float().logsumexp(-1).sum().backward()
            trainee.zero_grad(set_to_none=True)
        return run

    eager = median_ms(train_step(trainee))
    compiled = torch.compile(trainee, dynamic=False)
    t = time.perf_counter()
    train_step(compiled)()
    compile_s = time.perf_counter() - t
    fast = median_ms(train_step(compiled))
    print(f"tiny-student training forward + backward, 8 x 386 tokens (ms): eager {eager:.2f}, compiled {fast:.2f} "
          f"({eager / fast:.2f}x), first compiled call {compile_s:.0f} s")
    prompts = [torch.randint(3, len(tok), (n,)).tolist() for n in PROMPT_LENS]
    student.forward = torch.compile(student.forward, dynamic=True)
    try:
        sample(student, prompts, max_new_tokens=8, eos_id=-1, pad_id=0)
        print("listopd.train.rollout.sample with a compiled forward: works")
    except Exception as e:  # report what inductor says, not a traceback
        cause = next((line for line in str(e).splitlines() if "Error:" in line), str(e).splitlines()[0])
        print(f"listopd.train.rollout.sample with a compiled forward: fails: {type(e).__name__}: {cause.strip()[:200]}")


def static_decode(model, prompts: list[list[int]], new_tokens: int):
    """decode(forward) -> [B, new_tokens] greedy tokens: the prompt pass eager, then one `forward` call per token on
    a StaticCache whose length is rounded up to 64 (one compiled graph serves every step)."""
    from transformers.cache_utils import StaticCache

    from listopd.train.rollout import left_pad, position_ids

    ids, mask = left_pad(prompts, pad_id=0)
    b, p = ids.shape
    length = -(-(p + new_tokens) // 64) * 64

    @torch.no_grad()
    def decode(forward):
        full = torch.zeros((b, length), dtype=mask.dtype)
        full[:, :p] = mask
        cache = StaticCache(config=model.config, max_cache_len=length)
        logits = model(input_ids=ids, attention_mask=full, position_ids=position_ids(mask), cache=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        pos, tokens = position_ids(mask)[:, -1:] + 1, []
        for step in range(new_tokens):
            tokens.append(logits.float().argmax(-1))
            full[:, p + step] = 1
            logits = forward(input_ids=tokens[-1][:, None], attention_mask=full, position_ids=pos, cache=cache,
                             use_cache=True).logits[:, -1]
            pos = pos + 1
        return torch.stack(tokens, 1)

    return decode


def probe_gqa(args) -> None:
    import torch.nn.functional as F

    length = max(PROMPT_LENS) + 64
    for preset in ("tiny-student", "tiny-teacher", "small-teacher"):
        from listopd.train.models import get_preset

        p = get_preset(preset)
        heads, kv, hd = p.num_attention_heads, p.num_key_value_heads, p.head_dim
        q = torch.randn(8, heads, length, hd, requires_grad=True)
        k = torch.randn(8, kv, length, hd, requires_grad=True)
        v = torch.randn(8, kv, length, hd, requires_grad=True)
        m = torch.ones(length, length, dtype=torch.bool).tril()[None, None].repeat(8, 1, 1, 1)
        for row, n in enumerate(PROMPT_LENS):
            m[row, :, :, :max(PROMPT_LENS) - n] = False

        def attend(gqa: bool):
            if gqa:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)
            rep = heads // kv
            return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                                  attn_mask=m)
        with torch.no_grad():
            fwd = [median_ms(lambda: attend(g)) for g in (False, True)]
        fb = [median_ms(lambda: attend(g).sum().backward()) for g in (False, True)]
        print(f"{preset} attention, one layer: forward repeat {fwd[0]:.1f} ms, gqa {fwd[1]:.1f} ms; "
              f"forward+backward repeat {fb[0]:.1f} ms, gqa {fb[1]:.1f} ms")
    # the whole model: transformers repeats K/V when there is a mask, unless TRANSFORMERS_SDPA_FORCE_GQA=1
    # (read at every call); alternate the two settings on the same model
    import os

    tok = tokenizer()
    ids, mask, pos = scoring_batch(len(tok))
    for preset in ("tiny-student", "tiny-teacher", "small-teacher"):
        model = qwen3(preset, tok)

        def forward():
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                         logits_to_keep=64).logits

        def update():
            forward().float().logsumexp(-1).mean().backward()

        times, logits = {"0": {"score": [], "update": []}, "1": {"score": [], "update": []}}, {}
        for repeat in range(4):
            for flag in ("0", "1"):
                os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = flag
                with torch.no_grad():
                    times[flag]["score"].append(median_ms(forward, 1))
                    logits[flag] = forward()
                times[flag]["update"].append(median_ms(update, 1))
        os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA")
        ratio = {k: statistics.median(times["0"][k]) / statistics.median(times["1"][k]) for k in ("score", "update")}
        print(f"{preset} whole model, gqa vs repeat: scoring {ratio['score']:.2f}x, update {ratio['update']:.2f}x; "
              f"max |logit difference| {float((logits['0'] - logits['1']).abs().max()):.1e}")


def probe_sft_logits(args) -> None:
    from listopd.task.tasks import read_tasks
    from listopd.train.models import load_model, load_tokenizer
    from listopd.train.sft import collate, encode_example, target_loss_sum

    tok = load_tokenizer(args.model)
    model = load_model(args.model).train()
    tasks = read_tasks(args.tasks)[:args.batch]
    ids, labels, mask = collate([encode_example(t, tok) for t in tasks], tok.pad_token_id)

    def full():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                          ignore_index=-100, reduction="sum").backward()

    def targets():
        target_loss_sum(model, ids, labels, mask).backward()

    times = {"full": [], "targets": []}
    for _ in range(args.repeats):  # alternating, so that a background load hits both alike
        for name, fn in (("full", full), ("targets", targets)):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}, batch {len(tasks)} × {ids.shape[1]} tokens ({int((labels != -100).sum())} targets), "
          f"{args.threads} thread(s): forward + backward {med['full']:.2f} s with every position's logits, "
          f"{med['targets']:.2f} s from the earliest target on ({med['full'] / med['targets']:.2f}x); "
          f"runs {', '.join(f'{k} ' + ' '.join(f'{x:.2f}' for x in v) for k, v in times.items())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("profile", "compile", "gqa", "sft-logits"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="smollm2-135m", help="sft-logits: model (path, preset folder or name)")
    parser.add_argument("--tasks", help="sft-logits: task file whose first --batch tasks are the batch")
    parser.add_argument("--batch", type=int, default=4, help="sft-logits: tasks in the batch")
    parser.add_argument("--repeats", type=int, default=3, help="sft-logits: alternations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"profile": probe_profile, "compile": probe_compile, "gqa": probe_gqa,
     "sft-logits": probe_sft_logits}[args.probe](args)


if __name__ == "__main__":
    main()
