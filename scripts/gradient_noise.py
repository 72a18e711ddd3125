"""Cosine similarity between OPD gradients from independent batches: sampled-token estimator vs full-vocab
per-position reverse KL on the same samples."""
import sys, torch, itertools
torch.set_num_threads(1)
from listopd.models import load_model, load_tokenizer
from listopd.tasks import read_tasks
from listopd.training import encode_prompt
from listopd.rollout import sample, completion_logprobs, position_ids
from listopd.loss import listopd_loss
D = "/work/main/runs/exp"
tok = load_tokenizer(D + "/tokenizer"); s = load_model(D + "/warm200"); t = load_model(D + "/teacher400")
tasks = read_tasks(D + "/data/train.jsonl")
g = torch.Generator().manual_seed(0)
def flat_grad():
    v = torch.cat([p.grad.flatten() for p in s.parameters() if p.grad is not None]); s.zero_grad(); return v
def full_logits(m, ro):
    T = ro.completion_mask.shape[1]
    out = m(input_ids=ro.input_ids[:, :-1], attention_mask=ro.attention_mask[:, :-1], position_ids=position_ids(ro.attention_mask)[:, :-1], logits_to_keep=T)
    return out.logits[:, -T:].float()
G1, G2 = [], []
for b in range(4):
    idx = list(range(b * 16, b * 16 + 16))
    ro = sample(s, [encode_prompt(tasks[i], tok) for i in idx], max_new_tokens=64, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=g)
    ro = ro.rows(slice(None))
    with torch.no_grad(): lt = completion_logprobs(t, ro)
    s.train(); lp = completion_logprobs(s, ro)
    out = listopd_loss(lp, lp.detach(), lt, lp.detach(), ro.completion_mask, reward_scale=1.0, clip_strength=5.0, clip_mode="none", eps_low=.2, eps_high=.2, lp_sampler=ro.sampler_logprobs, num_tokens=float(ro.completion_mask.sum()))
    out.loss.backward(); G1.append(flat_grad())
    ls = torch.log_softmax(full_logits(s, ro), -1)
    with torch.no_grad(): lT = torch.log_softmax(full_logits(t, ro), -1)
    kl = (ls.exp() * (ls - lT)).sum(-1)
    ((kl * ro.completion_mask).sum() / ro.completion_mask.sum()).backward(); G2.append(flat_grad())
    print("batch", b, "full-vocab per-token KL", float((kl * ro.completion_mask).sum() / ro.completion_mask.sum()))
cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
print("sampled-token estimator, cos between batches:", [round(cos(G1[i], G1[j]), 3) for i, j in itertools.combinations(range(4), 2)])
print("full-vocab KL gradient,   cos between batches:", [round(cos(G2[i], G2[j]), 3) for i, j in itertools.combinations(range(4), 2)])
print("sampled vs full (same batch):", [round(cos(G1[i], G2[i]), 3) for i in range(4)])
