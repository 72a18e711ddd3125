"""Probes behind the performance section's "measured and left out" notes (not the benchmark itself).

    python benchmarks/probes.py profile    # op table of one bf16 scoring forward, small-teacher (~29M), batch 8
    python benchmarks/probes.py compile    # torch.compile: decode-token and scoring forward, eager vs compiled,
                                           # compile seconds, and whether listopd.rollout.sample compiles
    python benchmarks/probes.py gqa        # SDPA with the padding mask: K/V repeated (transformers' path with a
                                           # mask) vs enable_gqa, forward and forward+backward

Random-init Qwen3 presets at an 869-token vocabulary, prompts of 291–322 tokens, one thread (--threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

PROMPT_LENS = (291, 300, 310, 322, 295, 305, 299, 310)
VOCAB = 869


def qwen3(preset: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from listopd.models import get_preset

    p = get_preset(preset)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=p.hidden_size, num_hidden_layers=p.num_hidden_layers,
                      num_attention_heads=p.num_attention_heads, num_key_value_heads=p.num_key_value_heads,
                      head_dim=p.head_dim, intermediate_size=p.intermediate_size, tie_word_embeddings=True,
                      max_position_embeddings=1024)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen3ForCausalLM(cfg).eval()


def scoring_batch(new_tokens: int = 64):
    """Left-padded prompt + completion ids, the attention mask and position ids of a scoring forward."""
    total = max(PROMPT_LENS) + new_tokens
    ids = torch.randint(3, VOCAB, (len(PROMPT_LENS), total))
    mask = torch.ones_like(ids)
    for row, n in enumerate(PROMPT_LENS):
        mask[row, :max(PROMPT_LENS) - n] = 0
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


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

    model = qwen3("small-teacher").to(torch.bfloat16)
    ids, mask, pos = scoring_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        def forward():
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=64)
        forward()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            forward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def probe_compile(args) -> None:
    from listopd.rollout import sample

    student, teacher = qwen3("tiny-student"), qwen3("tiny-teacher")
    ids, mask, pos = scoring_batch()
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
    prompts = [torch.randint(3, VOCAB, (n,)).tolist() for n in PROMPT_LENS]
    student.forward = torch.compile(student.forward, dynamic=True)
    try:
        sample(student, prompts, max_new_tokens=8, eos_id=-1, pad_id=0)
        print("listopd.rollout.sample with a compiled forward: works")
    except Exception as e:  # report what inductor says, not a traceback
        cause = next((line for line in str(e).splitlines() if "Error:" in line), str(e).splitlines()[0])
        print(f"listopd.rollout.sample with a compiled forward: fails: {type(e).__name__}: {cause.strip()[:200]}")


def probe_gqa(args) -> None:
    import torch.nn.functional as F

    length = max(PROMPT_LENS) + 64
    for preset in ("tiny-student", "tiny-teacher", "small-teacher"):
        from listopd.models import get_preset

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("profile", "compile", "gqa"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"profile": probe_profile, "compile": probe_compile, "gqa": probe_gqa}[args.probe](args)


if __name__ == "__main__":
    main()
