"""What both trainers do around their step, in one place: the accelerator and the seed, resume from the last
checkpoint, `config.json`, the metrics log and progress bar, checkpoints, validation, the final export and
`summary.json`. A trainer (train/sft.py, train/opd.py) builds its models and optimiser, then:

    run = TrainingRun(cfg.out, seed=..., threads=..., bf16=..., batch_size=...)
    ...models, optimizer, scheduler...
    start_step, trainer_state, rng = run.resume(model, optimizer, scheduler, config={...}, path_keys=(...))
    run.start(model, optimizer, scheduler, config={...}, start_step=start_step)   # then run.model is the wrapped model
    while ...: <its step>; run.log(record); run.save(step, rng=..., trainer_state=...) every save_every
    run.finish(tokenizer, summary)

Everything here is the order of operations the trainers had before it was shared (RNG calls and collectives
included), so results stay bitwise the same.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

import torch

from listopd.train import checkpoint as ckpt
from listopd.train.distributed import make_accelerator, own_forward, ranks_agree
from listopd.train.evaluation import evaluate, headline
from listopd.train.metrics_log import MetricsLog
from listopd.train.run_identity import check_resumable, run_identity
from listopd.util.config import require
from listopd.util.errors import ListopdError
from listopd.util.io import atomic_write_json, refused_write


# torch's own thread count for this process (one per core, or OMP_NUM_THREADS), read before any run sets one:
# "threads 0" means this, also for a run that follows one with an explicit count in the same process (a sweep).
DEFAULT_THREADS = torch.get_num_threads()


class TrainingRun:
    """One training run's folder and process group (see the module docstring for the call order)."""

    def __init__(self, out: str, *, seed: int, threads: int, bf16: bool, batch_size: int,
                 bf16_sampling: bool = True):
        torch.set_num_threads(threads or DEFAULT_THREADS)
        self.accelerator = make_accelerator(bf16)
        self.fp32_sampling = bf16 and not bf16_sampling  # see `sampling`
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        require(batch_size >= self.world,
                f"batch_size ({batch_size}) must be ≥ the number of processes ({self.world})")
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.run_dir = Path(out)
        torch.manual_seed(seed)
        self.model = self.optimizer = self.scheduler = self.log_file = self.identity = None

    def resume(self, model, optimizer, scheduler, generator=None, *, config: dict,
               path_keys: tuple[str, ...], defaults: dict | None = None) -> tuple[int, dict, dict]:
        """(start step, trainer state, RNG state) of the run's last checkpoint, restored into the model,
        optimiser, scheduler and RNGs; (0, {}, {}) for a new run. A checkpoint of a run with other inputs or
        options (`config`; `path_keys` name its path options; `defaults` the options' default values) is refused
        (train/run_identity.py)."""
        self.identity = run_identity(config, path_keys)

        def same_run(state: dict) -> None:
            check_resumable(state.get("run"), self.identity, run_dir=self.run_dir, checkpoint_step=state["step"],
                            defaults=defaults)

        resumed = ckpt.resume_training(self.run_dir, model, optimizer, scheduler, generator, check=same_run)
        return (0, {}, {}) if resumed is None else resumed

    def start(self, model, optimizer, scheduler, *, config: dict, start_step: int) -> None:
        """Wrap model and optimiser for the accelerator (`self.model`, `self.optimizer`), write config.json,
        open the metrics log."""
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", config)
        self.log_file = MetricsLog(self.run_dir, resume_step=start_step, enabled=self.is_main)

    @property
    def unwrapped(self):
        """The model without its accelerator wrapper (for sampling, evaluation and saving)."""
        return self.accelerator.unwrap_model(self.model)

    def sampling(self):
        """A context manager giving the unwrapped model to sample and validate with: under bf16 autocast like
        the update (the default), or in float32 from the same master weights when the run was made with
        bf16_sampling=False (on a CPU, bf16 autocast slows token-by-token decoding:
        benchmarks/results/opd_step_intel_amx.md)."""
        return own_forward(self.unwrapped) if self.fp32_sampling else contextlib.nullcontext(self.unwrapped)

    def log(self, record: dict) -> None:
        self.log_file.write(record)

    def save(self, step: int, *, rng: dict, trainer_state: dict, protect: int | None = None) -> None:
        """A checkpoint of this step (main process; the checkpoint of step `protect` is kept too), then a
        barrier."""
        if self.is_main:
            ckpt.save_training_state(self.run_dir, step, self.unwrapped, self.optimizer, self.scheduler,
                                     rng=rng, trainer_state=trainer_state, identity=self.identity, protect=protect)
        self.accelerator.wait_for_everyone()

    def restore_weights(self, at_or_before: int) -> int | None:
        """Load the trainable weights of the newest checkpoint of a step ≤ `at_or_before` into the model (every
        rank); returns that step, or None when there is no such checkpoint (the model is left as it is)."""
        step = ckpt.step_at_or_before(self.run_dir, at_or_before)
        if step is None:
            return None
        weights, _, _ = ckpt.load_checkpoint(ckpt.checkpoint_folder(self.run_dir, step))
        ckpt.load_trainable_weights(self.unwrapped, weights)
        self.accelerator.wait_for_everyone()
        return step

    def validate(self, tokenizer, tasks, *, max_new_tokens: int, temperature: float = 0.0) -> dict:
        """The headline validation numbers on `tasks` ({} without validation tasks)."""
        if not tasks:
            return {}
        with self.sampling() as model:
            return headline(evaluate(model, tokenizer, tasks, max_new_tokens=max_new_tokens,
                                     temperature=temperature))

    def finish(self, tokenizer, summary: dict) -> dict:
        """Export `final/` and write `summary.json` (main process), close the log, end the process group."""
        summary = {**summary, "ranks_identical": ranks_agree(self.accelerator, self.model),
                   "world_size": self.world}
        if self.is_main:
            export_model(self.unwrapped, tokenizer, self.run_dir / "final")
            atomic_write_json(self.run_dir / "summary.json", summary)
        self.log_file.close()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()  # destroys the process group: a rank exiting without it can abort (gloo)
        return summary


def export_model(model, tokenizer, folder: Path) -> None:
    """save_pretrained into a temporary folder, then rename: the final model appears whole or not at all."""
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    with refused_write(tmp, f"the final model to {folder}"):
        if hasattr(model, "merge_and_unload"):  # LoRA: export plain merged weights
            model = model.merge_and_unload()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)


def check_finite(step: int, **values: float) -> None:
    """Stop on NaN/inf with the step and the quantity named (the caller keeps the last good checkpoint)."""
    for name, v in values.items():
        if v is not None and not math.isfinite(v):
            raise ListopdError(f"non-finite {name} ({v}) at step {step}; stopped without saving this step — "
                               f"the last good checkpoint is kept")
