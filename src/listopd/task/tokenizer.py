"""A byte-level BPE tokenizer with a ChatML chat template, trained on task text (for tiny models).

    tok = train_tokenizer(task_texts(tasks), vocab_size=2048)
    tok.save_pretrained("runs/tok")   # tokenizer.json, tokenizer_config.json, chat_template.jinja

What it is:
- Byte-level BPE (HF `tokenizers`): no normaliser, every string is its UTF-8 bytes mapped to 256 printable
  characters (GPT-2's table), so encode -> decode gives back exactly the input, whatever it contains.
  All 256 bytes are in the base vocabulary: there is no unknown token.
- Ids 0, 1, 2 are the special tokens `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (EOS: it closes
  every chat turn, so a generated assistant turn stops at it). Then the 256 bytes, then the merges, in the
  order they were learned. `vocab_size` counts all of these; a small corpus may stop short of it (there is
  nothing left to merge), so read the size from `len(tok)`.
- Pre-tokenisation (merges never cross these pieces): a run of letters with at most one leading space,
  one digit, one punctuation character with at most one leading space, runs of whitespace and newlines.
  One punctuation character per piece makes every JSON structural character of an output its own token,
  so the structural positions of the contract are token positions and no merge like `"]}` or `",` hides
  the choice between closing the list and continuing it:

      {"ranking": ["C", "A"]}  ->  { " ranking " : Ġ[ " C " , Ġ" A " ] }      (Ġ = a leading space)

  A K=8 answer is 39 tokens (40 with EOS). Letter-only candidate ids are one token each whenever they were
  seen in training (always for the single letters A-Z, which are byte tokens); digits are one token each.
- Deterministic: the same texts in the same order give a byte-identical tokenizer.json.

Chat template (ChatML, as Qwen and SmolLM2 use):

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n

`add_generation_prompt=True` ends with `<|im_start|>assistant\\n`; an assistant message renders as
`{content}<|im_end|>\\n` inside `{% generation %}` markers, so `return_assistant_tokens_mask=True` marks its
content and the closing EOS (the tokens SFT trains on). The SFT target for a task is therefore
`target_text(task) + "<|im_end|>"`.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)  # ids 0, 1, 2
EOS = IM_END

# Pieces merges may not cross (applied before the byte mapping). Order matters: first match wins.
PRETOKENIZE_PATTERN = (
    r"'(?:s|t|re|ve|m|ll|d)"      # English contractions
    r"| ?\p{L}+"                  # a word, with at most one leading space
    r"|\p{N}"                     # one digit
    r"| ?[^\s\p{L}\p{N}]"         # one punctuation / symbol character, with at most one leading space
    r"|\s*[\r\n]+"                # newlines (with the spaces before them)
    r"|\s+(?!\S)|\s+"             # other whitespace runs
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def render_chatml(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The string CHAT_TEMPLATE renders, without a tokenizer (used to build training text)."""
    out = []
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def task_texts(tasks) -> Iterator[str]:
    """Per task, the whole chat as the template renders it: system + user prompt, then the assistant turn
    with the canonical target (`prompts.target_text`) and EOS. Special tokens in it are ignored by
    `train_tokenizer`; everything between them is training text."""
    from listopd.task.prompts import render_messages, target_text

    for task in tasks:
        messages = render_messages(task) + [{"role": "assistant", "content": target_text(task)}]
        yield render_chatml(messages)


def _pieces(texts: Iterable[str]) -> Iterator[str]:
    """Texts with the special tokens cut out (the BPE trainer must not learn merges inside them)."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer expects strings, got {type(text).__name__}")
        for piece in _SPECIAL_SPLIT.split(text):
            if piece:
                yield piece


def build_backend_tokenizer(vocab: dict[str, int] | None = None, merges: list | None = None):
    """An (untrained, unless vocab/merges are given) `tokenizers.Tokenizer` with our pipeline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges) if vocab is not None else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train byte-level BPE on `texts` (any strings; `task_texts(tasks)` for task files) and wrap it as a
    `transformers.PreTrainedTokenizerFast` with eos `<|im_end|>`, pad `<|endoftext|>`, no bos, and the
    ChatML chat template. `vocab_size` includes the 3 special tokens and the 256 byte tokens (minimum 259);
    the result has at most that many tokens (fewer when the corpus runs out of pairs to merge)."""
    from tokenizers import AddedToken, pre_tokenizers, trainers

    n_base = len(SPECIAL_TOKENS) + 256
    if vocab_size < n_base:
        raise ValueError(f"vocab_size must be at least {n_base} (3 special tokens + 256 bytes), got {vocab_size}")
    tok = build_backend_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_pieces(texts), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):  # the trainer puts them first, in order
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return wrap_tokenizer(tok)


def wrap_tokenizer(backend):
    """`tokenizers.Tokenizer` (ours) -> PreTrainedTokenizerFast with special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,
        model_max_length=1024,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )
    return fast
