"""What makes a run the same run, so that resuming it with other data or other options is refused.

Every checkpoint's state.json holds the run's identity: its options (config.json's content) and a fingerprint
of every input file or folder it names (task files, model and tokenizer folders, the calibration file). A
run started again in a folder that holds a checkpoint must have the same identity, or it is refused with
the differences named (NeMo-RL resumed with a different data set and silently skipped samples; verl resumed
at an epoch boundary and silently ran 0 steps).

What may change on resume (documented in the README): a larger `steps` (the rest of the budget; a schedule
that depends on `steps` — warm-up is fixed, cosine is not — follows the new total from the resumed step on),
and the options that change neither the data nor the updates: `eval_every`, `eval_tasks`, `save_every`,
`threads`, `sampler_threads`, `role_probe_tasks`; and an option the checkpoint's run did not have (it was
written before the option existed) is accepted at its default value. Paths are compared by what they hold, not
how they are spelt (`./data/train.jsonl` and its absolute path are the same input; the same path holding new
data is not).

Fingerprints: a file's SHA-256; a folder's SHA-256 over each file's relative name, size and the SHA-256 of its
first and last MiB (model weights change everywhere when a model is retrained, so this sees a retrained
model without reading gigabytes at every resume). Torch-free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from listopd.util.errors import ListopdError

RESUME_MAY_CHANGE = ("eval_every", "eval_tasks", "save_every", "threads", "sampler_threads", "role_probe_tasks")
_EDGE = 1 << 20


def _edges_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= 2 * _EDGE:
            h.update(f.read())
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()


def fingerprint(path: str | None) -> str | None:
    """A short content fingerprint of a file or folder; the string itself for a name that is neither (a
    preset such as tiny-teacher); None for None."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return "file:" + h.hexdigest()[:16]
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
            size = f.stat().st_size
            h.update(f"{f.relative_to(p).as_posix()}\0{size}\0{_edges_sha256(f, size)}\n".encode())
        return "folder:" + h.hexdigest()[:16]
    return "name:" + str(path)


def run_identity(config: dict, path_keys: tuple[str, ...]) -> dict:
    """The identity to store with every checkpoint: the options, with each path option replaced by the
    fingerprint of what it names."""
    options = {k: v for k, v in config.items() if k not in path_keys and k != "out"}
    return {"options": options, "inputs": {k: fingerprint(config.get(k)) for k in path_keys}}


def check_resumable(saved: dict | None, current: dict, *, run_dir, checkpoint_step: int,
                    defaults: dict | None = None) -> None:
    """Refuse (one line) to resume a checkpoint whose run had another identity; None (a checkpoint written
    before identities were stored) is accepted. `defaults`: the options' default values (an option missing
    from the saved identity is taken to have had its default)."""
    steps = current["options"].get("steps")
    if steps is not None and checkpoint_step > steps:
        raise ListopdError(f"{run_dir}: its checkpoint is at step {checkpoint_step}, past steps = {steps}: nothing "
                           f"to resume (a run's budget can grow, not shrink); use a new run folder")
    if saved is None:
        return
    diffs = []
    for key in sorted(set(saved.get("inputs", {})) | set(current["inputs"])):
        old, new = saved.get("inputs", {}).get(key), current["inputs"].get(key)
        if old != new:
            diffs.append(f"{key} holds other content ({old} → {new})")
    old_opts, new_opts = saved.get("options", {}), current["options"]
    for key in sorted(set(old_opts) | set(new_opts)):
        if key in RESUME_MAY_CHANGE or old_opts.get(key) == new_opts.get(key):
            continue
        if key not in old_opts and key in (defaults or {}) and new_opts.get(key) == defaults[key]:
            continue  # an option added since that checkpoint was written, at its default
        if key == "steps" and isinstance(old_opts.get(key), int) and new_opts.get(key, 0) > old_opts[key]:
            continue
        diffs.append(f"{key} {old_opts.get(key)!r} → {new_opts.get(key)!r}")
    if diffs:
        raise ListopdError(f"{run_dir} holds a checkpoint (step {checkpoint_step}) of a different run: "
                           f"{'; '.join(diffs)}. Resume with the same data and options (only a larger steps, "
                           f"{', '.join(RESUME_MAY_CHANGE)} may change) or use a new run folder")
