"""The prompt for a listwise task and its reference output.

Messages (the same for every model):

    system: You rank candidates for a user. Reply with one JSON object and nothing else.
    user:   <context>

            Candidates:
            [A] <text of A>
            [B] <text of B>
            ...

            Rank all K candidates from best to worst. Use each id exactly once. Reply in exactly this
            format (ids in your order):
            {"ranking": ["A", "B", ...]}

The format line lists the task's own ids in the given order, serialised exactly as the target is. Runs of
whitespace (newlines included) in a candidate text collapse to one space, so each candidate is one line;
the context is used as given (stripped).

`render_prompt(task, tokenizer)` renders the messages with the tokenizer's chat template
(`apply_chat_template(..., tokenize=False, add_generation_prompt=True)`) when it has one; templates that
refuse a system turn get the system text prepended to the user turn. Without a tokenizer or without a chat
template the plain template is used:

    <system>\\n\\n<user>\\n\\nAnswer:\\n

and the model's completion (the target) follows the final newline directly.

Candidate texts are used as given; keeping them short (so a K=8 prompt stays near 300 tokens for small
models) is the data builder's job. Nothing is truncated: a task whose prompt (plus what the model must add:
the target in SFT and calibration, `max_new_tokens` in sampling) exceeds the model's context is refused before
any work starts (`refuse_long_prompts`), naming the task; a cut prompt would silently train on another task.
"""

from __future__ import annotations

from listopd.task.contract import canonical_json
from listopd.task.tasks import Task
from listopd.util.errors import InputError

SYSTEM = "You rank candidates for a user. Reply with one JSON object and nothing else."
PLAIN_TEMPLATE = "{system}\n\n{user}\n\nAnswer:\n"


def _user_text(task: Task) -> str:
    lines = [task.context.strip(), "", "Candidates:"]
    lines += [f"[{c.id}] {' '.join(c.text.split())}" for c in task.candidates]
    lines += [
        "",
        f"Rank all {task.k} candidates from best to worst. Use each id exactly once. "
        "Reply in exactly this format (ids in your order):",
        canonical_json(task.candidate_ids),
    ]
    return "\n".join(lines)


def render_messages(task: Task) -> list[dict]:
    """System and user chat messages for one task (see the module docstring for the exact text)."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _user_text(task)}]


def render_prompt(task: Task, tokenizer=None) -> str:
    """The prompt string: the tokenizer's chat template when it has one, else the plain template."""
    messages = render_messages(task)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - some templates reject a system turn (jinja raises its own error)
            merged = [{"role": "user", "content": f"{SYSTEM}\n\n{messages[1]['content']}"}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(system=SYSTEM, user=messages[1]["content"])


def reference_ranking(task: Task) -> list[str]:
    """Ids by relevance, highest first; ties keep the candidate order."""
    order = sorted(range(task.k), key=lambda i: (-task.relevance[task.candidates[i].id], i))
    return [task.candidates[i].id for i in order]


def target_text(task: Task, key: str = "ranking") -> str:
    """The reference output, in the canonical form: {"ranking": ["C", "A", ...]}."""
    return canonical_json(reference_ranking(task), key)


def encode_prompt(task: Task, tokenizer) -> list[int]:
    """The prompt's token ids, as every trainer, sampler and scorer feeds them to a model."""
    # verbose=False: no "longer than the maximum sequence length" warning; the callers compare lengths with the
    # model's context themselves (refuse_long_prompts) and refuse in one line
    return tokenizer.encode(render_prompt(task, tokenizer), add_special_tokens=False, verbose=False)


def refuse_long_prompts(tasks: list[Task], lengths: list[int], limit: int | None, *, source: str,
                        room: int = 0, what: str = "prompt") -> None:
    """InputError for the first task whose `what` (its `lengths` entry, in tokens) plus `room` new tokens does
    not fit a context of `limit` tokens (None: the model states no limit, nothing is checked)."""
    if limit is None:
        return
    for i, (task, n) in enumerate(zip(tasks, lengths)):
        if n + room > limit:
            extra = f" + {room} new tokens" if room else ""
            raise InputError(f"task {i + 1} (id {task.id!r}): its {what} is {n} tokens{extra}, over the model's "
                             f"context of {limit} tokens (nothing is truncated: shorten its text)", path=source)
