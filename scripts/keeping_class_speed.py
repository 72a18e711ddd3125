"""Time the contract-keeping class over a whole vocabulary at every position of a K=8 reference output.

Usage: python scripts/keeping_class_speed.py TOKENIZER TASKS.jsonl   (TOKENIZER: a folder or smollm2-135m)
"""

import sys
import time

import numpy as np

from listopd.task.roles import VocabularyText
from listopd.task.contract import RankingContract
from listopd.train.models import load_tokenizer
from listopd.task.prompts import target_text
from listopd.task.tasks import read_tasks

tok = load_tokenizer(sys.argv[1])
vocab = VocabularyText.from_tokenizer(tok)
times = []
for task in read_tasks(sys.argv[2])[:20]:
    state = RankingContract.for_task(task).start()
    for token in tok.encode(target_text(task), add_special_tokens=False):
        t0 = time.perf_counter()
        vocab.keeping_mask(state)
        times.append(time.perf_counter() - t0)
        state = state.feed(vocab.texts[token])
first = times[:len(tok.encode(target_text(read_tasks(sys.argv[2])[0]), add_special_tokens=False))]
print(f"vocabulary {len(vocab.texts)}: first task (states new) median {1000 * np.median(first):.1f} ms, "
      f"max {1000 * max(first):.1f} ms per position; all {len(times)} positions (states cached across tasks "
      f"with the same ids) median {1000 * np.median(times):.2f} ms")
