"""listopd.task.tokenizer: byte-level BPE trained on task text, ChatML template, exact round trips, determinism."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listopd.task.prompts import render_messages, render_prompt, target_text
from listopd.task.tasks import Candidate, Task, write_tasks
from listopd.task.tokenizer import (IM_END, IM_START, PAD, render_chatml, task_texts, train_tokenizer)

ITEMS = [
    "Brightmoor Women's Striped Pleated Midi Skirt - Pink, Boho, Denim",
    "Kestrel & Co Women's Plaid Knee-High Boots - Pink, Streetwear, Suede",
    "Tessaly Women's Relaxed Fit Blazer - Sky Blue, Streetwear, Leather",
    "Vantor Men's Plaid Bomber Jacket - Sky Blue, Streetwear, Polyester",
    "Aubrey Maison Men's Turtleneck Sweater - White, Minimalist, Cotton",
    "Quillon Men's Mom Jeans - Red, Casual, Stretch Denim — 100% coton, été",
    "Urbanly Unisex Denim Jacket - Olive Green, Formal, Wool Blend",
    "Café Noir Scarf 🧣 - Beige, Classic, Cashmere",
]


def make_tasks(n: int = 12, k: int = 6) -> list[Task]:
    tasks = []
    for t in range(n):
        ids = [chr(ord("A") + i) for i in range(k)]
        texts = [ITEMS[(t + i) % len(ITEMS)] for i in range(k)]
        context = "Purchase history (oldest first):\n" + "\n".join(
            f"{j + 1}. {ITEMS[(3 * t + j) % len(ITEMS)]}" for j in range(3))
        relevance = {cid: float((t * 7 + i * 3) % 4) for i, cid in enumerate(ids)}
        tasks.append(Task(id=f"t{t}", context=context, split="train",
                          candidates=tuple(Candidate(c, x) for c, x in zip(ids, texts)), relevance=relevance))
    return tasks


@pytest.fixture(scope="module")
def tasks():
    return make_tasks()


@pytest.fixture(scope="module")
def tok(tasks):
    return train_tokenizer(task_texts(tasks), vocab_size=600)


def test_special_tokens_and_ids(tok):
    assert tok.convert_tokens_to_ids([PAD, IM_START, IM_END]) == [0, 1, 2]
    assert tok.eos_token == IM_END and tok.eos_token_id == 2
    assert tok.pad_token == PAD and tok.pad_token_id == 0
    assert tok.bos_token is None
    assert 259 < len(tok) <= 600
    # the special tokens are not learned as merges, and are atomic when they appear in text
    assert not [t for t in tok.get_vocab() if "<|" in t and t not in (PAD, IM_START, IM_END)]
    assert tok(f"x{IM_START}user{IM_END}", add_special_tokens=False)["input_ids"][1::2] == [1, 2]


def test_deterministic(tasks, tok, tmp_path):
    again = train_tokenizer(task_texts(tasks), vocab_size=600)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    tok.save_pretrained(tmp_path / "a")
    again.save_pretrained(tmp_path / "b")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_json_output_tokenizes_by_structure(tasks, tok):
    text = target_text(tasks[0])
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    ranking = json.loads(text)["ranking"]
    # one token per structural character (a leading space rides on the next `"` / `[`), ids one token each
    expected = ["{", '"', "ranking", '"', ":", "Ġ[", '"']
    for i, cid in enumerate(ranking):
        expected += [cid, '"', ","] + (['Ġ"'] if i < len(ranking) - 1 else [])
    expected[-1:] = ["]", "}"]
    assert pieces == expected


@pytest.mark.parametrize("text", [
    '{"ranking": ["C", "A", "B"]}',
    '{"ranking":["C","A","B"]}',
    '{ "ranking" : [ "AB12", "x y", "\\u0041", "é" ] }\n',
    '  {"ranking": []}  ',
    "\t\n\r\n  trailing spaces   ",
    "",
])
def test_round_trip_json(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_round_trip_task_text(tasks, tok):
    for text in task_texts(tasks):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
        assert tok.decode(tok(text)["input_ids"]) == text  # no bos/eos added by default


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template(tasks, tok):
    task = tasks[0]
    messages = render_messages(task)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == render_chatml(messages, add_generation_prompt=True)
    assert prompt.startswith(f"{IM_START}system\n") and prompt.endswith(f"{IM_START}assistant\n")
    assert render_prompt(task, tok) == prompt
    assert tok.apply_chat_template(messages, tokenize=False).endswith(f"{IM_END}\n")

    answer = target_text(task)
    full = messages + [{"role": "assistant", "content": answer}]
    out = tok.apply_chat_template(full, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained[-1] == tok.eos_token_id  # the assistant turn ends with EOS
    assert tok.decode(trained) == answer + IM_END
    # prompt tokens + answer tokens + EOS is exactly the templated conversation (no boundary merges)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt_ids) + len(answer_ids)] == prompt_ids + answer_ids


def test_save_load_round_trip(tasks, tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.bos_token_id) == (2, 0, None)
    assert loaded.chat_template == tok.chat_template
    for text in list(task_texts(tasks))[:3] + [' "é 🧣"  ']:
        ids = tok(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids and loaded.decode(ids) == text


def test_extra_strings_and_too_small_vocab():
    tok = train_tokenizer(["hello world " * 5, "hello there"], vocab_size=270)
    assert len(tok) <= 270 and "Ġworld" in tok.get_vocab()
    with pytest.raises(ValueError, match="at least 259"):
        train_tokenizer(["x"], vocab_size=100)


def test_cli_train(tmp_path, tasks, capsys):
    from listopd.cli import main

    path = tmp_path / "train.jsonl"
    write_tasks(path, tasks)
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--tasks", str(path), "--out", str(out), "--vocab-size", "600",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (out / "tokenizer.json").is_file()
    assert summary["vocab_size"] <= 600 and summary["tasks"] == len(tasks)
    assert summary["mean_prompt_tokens"] > summary["mean_target_tokens"] > 6
    assert main(["tokenizer", "train", "--tasks", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
